import type {StorageSetting} from '../storage/contract'

/**
 * The arguments of `wal fetch` as restore_command passes them: `[--<storage flag> <value> …] <name>
 * <destination>`. `dbb restore --type base` writes the storage settings as flags
 * (`--storage local --local-dir /backups %f %p`, src/restore/base-cli.ts), so the per-segment fast
 * paths (src/wal/foreground.ts, src/wal/fast-cli.ts) must accept them: each flag becomes its
 * setting's environment variable, as the oclif command would read it (a flag wins over the
 * environment). Only the built-in backends' storage flags and --storage are known here; anything
 * else returns undefined and the command runs through oclif.
 */
export interface WalFetchArgs {
  name: string
  destination: string
  /** Environment variables the flags set. */
  overrides: Record<string, string>
}

export function parseWalFetchArgs(args: readonly string[]): WalFetchArgs | undefined {
  const positional: string[] = []
  const overrides: Record<string, string> = {}
  let flagVariables: Map<string, string> | undefined
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]
    if (!arg.startsWith('-')) {
      positional.push(arg)
      continue
    }

    const match = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg)
    if (!match) return undefined
    flagVariables ??= storageFlagVariables()
    const variable = flagVariables.get(match[1])
    const value = match[2] ?? args[++index]
    if (variable === undefined || value === undefined) return undefined
    overrides[variable] = value
  }

  if (positional.length !== 2) return undefined
  return {name: positional[0], destination: positional[1], overrides}
}

/** flag → variable for --storage and the built-in backends' settings (the one declaration of each, read here). */
function storageFlagVariables(): Map<string, string> {
  const {setting} = require('../settings') as typeof import('../settings')
  const {localProvider} = require('@dbb/storage-local') as {localProvider: {settings: StorageSetting[]}}
  const {S3_SETTINGS} = require('@dbb/storage-s3') as {S3_SETTINGS: StorageSetting[]}
  // AGE_IDENTITY_FILE: restore_command of an encrypted archive names the identity's path (src/restore/base-cli.ts).
  const specs = [setting('STORAGE_BACKEND'), setting('AGE_IDENTITY_FILE'), ...localProvider.settings, ...S3_SETTINGS]
  return new Map(specs.map((spec) => [spec.flag, spec.env]))
}
