import {DbbCommand} from '../base-command'
import {renderTable} from '../format'
import {defaultLabel, helpSummary} from '../settings'
import {discoverProviders} from '../storage/registry'

interface BackendInfo {
  name: string
  summary: string
  plugin: string
  contractVersion: number
  settings: {env: string; flag: string; summary: string; example: string; default?: string; required: boolean; secret: boolean}[]
}

export default class Backends extends DbbCommand<typeof Backends> {
  static override summary = 'List the installed storage backends and their settings.'
  static override description =
    'Storage backends are plugins; each adds its settings as environment variables and as flags of every command that uses storage (backup, restore, prune, serve …). Those flags are added at run time, so `--help` of those commands cannot list them: this command does.'

  static override examples = [
    {description: 'Backends and their variables', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'After installing a backend plugin', command: '<%= config.bin %> plugins install dbb-storage-example && <%= config.bin %> <%= command.id %>'},
  ]

  public async run(): Promise<BackendInfo[]> {
    const registry = await discoverProviders(this.config)

    const backends = [...registry.providers.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((provider) => ({
        name: provider.name,
        summary: provider.summary,
        plugin: registry.plugins.get(provider.name) ?? '',
        contractVersion: provider.contractVersion ?? 1,
        settings: provider.settings.map((spec) => ({
          env: spec.env,
          flag: spec.flag,
          summary: spec.summary,
          example: spec.secret ? '<secret>' : spec.example,
          ...(defaultLabel(spec) === undefined ? {} : {default: spec.secret ? '<secret>' : defaultLabel(spec)}),
          required: spec.required === true,
          secret: spec.secret === true,
        })),
      }))
    const provider = (name: string) => registry.providers.get(name)?.settings ?? []
    for (const backend of backends) {
      this.log(`${backend.name} — ${backend.summary} (plugin ${backend.plugin})`)
      this.log(
        renderTable(
          ['VARIABLE', 'FLAG', 'EXAMPLE', 'MEANING'],
          // The same one-line help as the flag's in `--help` (X_FILE for secrets, the declared default).
          provider(backend.name).map((spec) => [spec.env, `--${spec.flag}`, spec.secret ? '<secret>' : spec.example, helpSummary(spec)]),
        )
          .split('\n')
          .map((line) => `  ${line}`)
          .join('\n'),
      )
      this.log('')
    }

    for (const problem of registry.problems) this.warn(problem)
    return backends
  }
}
