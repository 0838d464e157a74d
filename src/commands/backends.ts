import {DbbCommand} from '../base-command'
import {renderTable} from '../format'
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
          ...(spec.default === undefined ? {} : {default: spec.secret ? '<secret>' : spec.default}),
          required: spec.required === true,
          secret: spec.secret === true,
        })),
      }))
    for (const backend of backends) {
      this.log(`${backend.name} — ${backend.summary} (plugin ${backend.plugin})`)
      this.log(
        renderTable(
          ['VARIABLE', 'FLAG', 'DEFAULT', 'EXAMPLE', 'MEANING'],
          backend.settings.map((setting) => [
            setting.env + (setting.secret ? ' (secret)' : ''),
            `--${setting.flag}`,
            setting.required ? 'required' : (setting.default ?? '—'),
            setting.example,
            setting.summary,
          ]),
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
