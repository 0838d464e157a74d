import {existsSync, readFileSync} from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {passfileProblem} from '../db/pgpass'
import {ConfigError, ConfigIssue} from '../errors'
import {registerSecret} from '../secrets'
import {SettingName, setting} from '../settings'
import * as archivingSections from './archiving'
import * as coreSections from './core'
import * as notifySections from './notify'
import * as drillSections from './drill'
import * as encryptionSections from './encryption'
import {DatabaseConfig} from './core'
import type {ConfigSection} from './fields'
import * as serverSections from './server'
import * as walAsyncSections from './wal-async'

export type {CompressionConfig, DatabaseConfig, DatabasesConfig, LogicalDumpConfig, LoggingConfig, RetentionConfig} from './core'
export {DEFAULT_BACKUP_INTERVAL_MS} from './server'
export type {ScheduleConfig, ServerConfig} from './server'
export type {DrillConfig} from './drill'
export type {DecryptionConfig, EncryptionConfig} from './encryption'
export {drillServer} from './drill'

/**
 * One place for configuration: sections (core.ts, server.ts, archiving.ts, wal-async.ts) that read
 * settings declared in src/settings.ts (schema and default come from the declaration), validated
 * once at the start of a command into a frozen, typed config. Each
 * command asks only for the sections it uses (`backup list` needs no database settings). Every
 * problem becomes one line naming the variable, what is wrong, and an example (see ConfigError).
 */
const sections = {
  database: coreSections.database,
  namePrefix: coreSections.namePrefix,
  retention: coreSections.retention,
  storageBackend: coreSections.storageBackend,
  logging: coreSections.logging,
  compression: coreSections.compression,
  logicalDump: coreSections.logicalDump,
  server: serverSections.server,
  schedule: serverSections.schedule,
  baseBackup: archivingSections.baseBackup,
  archiving: archivingSections.archiving,
  walStreaming: archivingSections.walStreaming,
  check: archivingSections.check,
  // Notifications (src/notify): NOTIFY_* and the SLACK_* aliases.
  notify: notifySections.notify,
  walAsync: walAsyncSections.walAsync,
  walReadAhead: walAsyncSections.walReadAhead,
  // Several databases and cluster globals (issue 20).
  databases: coreSections.databases,
  // restore drills (issue 19)
  drill: drillSections.drill,
  drillAge: drillSections.drillAge,
  // Client-side encryption with age (issue 20 item 4)
  encryption: encryptionSections.encryption,
  decryption: encryptionSections.decryption,
}

export type Section = keyof typeof sections
type SectionOutput<K extends Section> = (typeof sections)[K] extends ConfigSection<infer T> ? T : never
export type Config = {[K in Section]: SectionOutput<K>}

export type ArchivingConfig = Config['archiving']
export type BaseBackupConfig = Config['baseBackup']
export type WalStreamingConfig = Config['walStreaming']
export type CheckConfig = Config['check']
export type NotifySettings = Config['notify']
export type WalAsyncConfig = Config['walAsync']
export type WalReadAheadConfig = Config['walReadAhead']

/** The settings each section reads: what a command that needs the section must declare as flags. */
export const SECTION_SETTINGS = Object.fromEntries(
  Object.entries(sections).map(([name, section]) => [name, section.settings]),
) as Record<Section, SettingName[]>

export const DEFAULT_PASSFILE = '/run/secrets/pgpass'

/**
 * Validates the given sections. `values` is keyed by variable name (flags already folded in);
 * `env` supplies the libpq fallbacks PGPASSWORD and PGPASSFILE. Throws one ConfigError listing
 * every problem. The result is frozen: what was validated is what runs.
 */
export function loadConfig<S extends Section>(
  wanted: readonly S[],
  values: Record<string, string | undefined>,
  env: NodeJS.ProcessEnv = process.env,
): Readonly<Pick<Config, S>> {
  const issues: ConfigIssue[] = []
  const config: Partial<Record<Section, unknown>> = {}
  for (const name of wanted) {
    const section: ConfigSection<unknown> = sections[name]
    const input = Object.fromEntries(section.settings.map((variable) => [variable, blankToUndefined(values[variable])]))
    const result = section.schema.safeParse(input)
    if (result.success) {
      config[name] = result.data
      continue
    }

    for (const issue of result.error.issues) {
      const variable = String(issue.path[0] ?? name)
      issues.push({variable, message: issue.message, example: exampleOf(variable)})
    }
  }

  if (config.database) {
    try {
      config.database = withPasswordFallbacks(config.database as DatabaseConfig, env)
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      issues.push(...error.issues)
    }
  }

  if (issues.length > 0) throw new ConfigError(issues)
  return Object.freeze(config) as Pick<Config, S>
}

/** `~/.pgpass` of the user dbb runs as, where libpq looks by default; undefined without a home. */
export function homePassfile(env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    const home = blankToUndefined(env.HOME) ?? os.homedir()
    return path.join(home, '.pgpass')
  } catch {
    return undefined
  }
}

/**
 * Where the password comes from, in libpq's order with dbb's additions first: DB_PASSWORD,
 * PGPASSWORD, the file PGPASSFILE names, else /run/secrets/pgpass (Docker/Kubernetes secrets),
 * else ~/.pgpass. A pgpass file that exists but cannot be read is a configuration error naming
 * the file, the user and the cause (never silently skipped); so is a PGPASSFILE that is missing.
 */
function withPasswordFallbacks(database: DatabaseConfig, env: NodeJS.ProcessEnv): DatabaseConfig {
  if (database.password !== undefined) return {...database, passwordSource: 'DB_PASSWORD', passfile: undefined}
  const fromEnv = blankToUndefined(env.PGPASSWORD)
  registerSecret(fromEnv)
  if (fromEnv !== undefined) return {...database, password: fromEnv, passwordSource: 'PGPASSWORD', passfile: undefined}
  const explicit = blankToUndefined(env.PGPASSFILE)
  const home = homePassfile(env)
  const passfile = explicit ?? [DEFAULT_PASSFILE, home].find((file): file is string => file !== undefined && existsSync(file))
  if (passfile !== undefined) {
    try {
      readFileSync(passfile)
    } catch (error) {
      throw new ConfigError([{variable: explicit === undefined ? 'pgpass' : 'PGPASSFILE', message: passfileProblem(passfile, error)}])
    }
  }

  return {...database, password: undefined, passwordSource: undefined, passfile}
}

function exampleOf(variable: string): string | undefined {
  return Object.values(sections).some((section) => section.settings.includes(variable as SettingName))
    ? setting(variable as SettingName).example
    : undefined
}

function blankToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}
