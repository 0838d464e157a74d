import {Command, Config, Help} from '@oclif/core'

import {discoverProviders} from './storage/registry'

/**
 * oclif's help, plus what it cannot know from the manifest: a storage command's backend flags.
 * Backend plugins declare their settings at run time (base-command.ts turns them into flags when
 * the command runs), so the static help would omit --local-dir or --s3-bucket. For every command
 * that uses storage this lists the selected backend's settings and points to `dbb backends`.
 */
export default class DbbHelp extends Help {
  public override async showCommandHelp(command: Command.Loadable): Promise<void> {
    await super.showCommandHelp(command)
    if ((command as {usesStorage?: boolean}).usesStorage !== true) return
    const registry = await discoverProviders(this.config as Config)
    const requested = (process.env.STORAGE_BACKEND || 'local').trim().toLowerCase()
    const provider = registry.providers.get(requested)
    const lines: string[] = []
    if (provider) {
      lines.push(`STORAGE FLAGS (backend "${provider.name}", from STORAGE_BACKEND${process.env.STORAGE_BACKEND ? '' : ' (default)'}; every backend: ${this.config.bin} backends)`)
      const width = Math.max(...provider.settings.map((spec) => `--${spec.flag}=${spec.secret ? '<secret>' : spec.example}`.length))
      for (const spec of provider.settings) {
        const flag = `--${spec.flag}=${spec.secret ? '<secret>' : spec.example}`
        const fallback = spec.required ? ' Required.' : spec.default === undefined ? '' : ` Default: ${spec.default}.`
        lines.push(`  ${flag.padEnd(width)}  ${spec.summary}${fallback}${spec.secret ? ` Or ${spec.env}_FILE.` : ''} (env: ${spec.env})`)
      }
    } else {
      lines.push(`STORAGE FLAGS: STORAGE_BACKEND="${requested}" is not installed (installed: ${[...registry.providers.keys()].sort().join(', ')}); run ${this.config.bin} backends`)
    }

    this.log(`\n${lines.join('\n')}`)
  }
}
