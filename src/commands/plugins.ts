import {DbbCommand} from '../base-command'
import {renderTable} from '../format'
import {discoverProviders} from '../storage/registry'

interface PluginInfo {
  name: string
  version: string
  type: string
  storageBackend?: string
}

/**
 * Replaces @oclif/plugin-plugins' list (which shows only user-installed plugins and so answered
 * "No plugins installed" while the local and s3 backends are plugins): every plugin that matters to
 * a dbb user, the built-in storage backends included. install/link/uninstall stay plugin-plugins'.
 */
export default class Plugins extends DbbCommand<typeof Plugins> {
  static override summary = 'List the plugins: the built-in storage backends and those installed or linked.'
  static override description =
    'Storage backends are oclif plugins: local and s3 are built in (core); others are added with `plugins install <name>` (a short name such as `webdav` means the npm package @dbb/storage-webdav if it exists, else dbb-storage-webdav), `plugins install file:<path to a .tgz>`, or `plugins link <dir>`, and removed with `plugins uninstall <package>`. `dbb backends` shows each backend\'s settings.'

  static override examples = [
    {description: 'The plugins', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Install the backend published as dbb-storage-webdav', command: '<%= config.bin %> plugins install webdav'},
    {description: 'Install a backend from a tarball (npm pack)', command: '<%= config.bin %> plugins install file:/tmp/dbb-storage-example-0.1.0.tgz'},
    {description: 'Add a backend from a directory', command: '<%= config.bin %> plugins link ./dbb-storage-example'},
  ]

  public async run(): Promise<PluginInfo[]> {
    const registry = await discoverProviders(this.config)
    const backendByPlugin = new Map([...registry.plugins].map(([backend, plugin]) => [plugin, backend]))
    const plugins = this.config
      .getPluginsList()
      .filter((plugin) => plugin.type !== 'core' || plugin.name !== this.config.name)
      .filter((plugin) => plugin.type !== 'core' || backendByPlugin.has(plugin.name))
      .map((plugin) => ({
        name: plugin.name,
        version: plugin.version,
        type: plugin.type === 'core' ? 'built in' : plugin.type === 'link' ? 'linked' : 'installed',
        storageBackend: backendByPlugin.get(plugin.name),
      }))
      .sort((a, b) => a.name.localeCompare(b.name))
    this.log(renderTable(['PLUGIN', 'VERSION', 'SOURCE', 'STORAGE BACKEND'], plugins.map((plugin) => [plugin.name, plugin.version, plugin.type, plugin.storageBackend ?? '—'])))
    for (const problem of registry.problems) this.warn(problem)
    return plugins
  }
}
