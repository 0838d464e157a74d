import {existsSync} from 'node:fs'

import {ConfigError, ConfigIssue} from '../errors'
import {SettingName, setting} from '../settings'
import * as archivingSections from './archiving'
import * as coreSections from './core'
import {DatabaseConfig} from './core'
import type {ConfigSection} from './fields'
import * as serverSections from './server'
import * as walAsyncSections from './wal-async'

export type {CompressionConfig, DatabaseConfig, LoggingConfig, RetentionConfig} from './core'
export {DEFAULT_BACKUP_INTERVAL_MS} from './server'
export type {ScheduleConfig, ServerConfig} from './server'

/**
 * One place for configuration: zod schemas keyed by environment variable (core.ts, server.ts,
 * archiving.ts), validated once at the start of a command into a frozen, typed config. Each
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
  server: serverSections.server,
  schedule: serverSections.schedule,
  baseBackup: archivingSections.baseBackup,
  archiving: archivingSections.archiving,
  walStreaming: archivingSections.walStreaming,
  check: archivingSections.check,
  slack: archivingSections.slack,
  walAsync: walAsyncSections.walAsync,
}

export type Section = keyof typeof sections
type SectionOutput<K extends Section> = (typeof sections)[K] extends ConfigSection<infer T> ? T : never
export type Config = {[K in Section]: SectionOutput<K>}

export type ArchivingConfig = Config['archiving']
export type BaseBackupConfig = Config['baseBackup']
export type WalStreamingConfig = Config['walStreaming']
export type CheckConfig = Config['check']
export type SlackConfig = Config['slack']
export type WalAsyncConfig = Config['walAsync']

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

  if (issues.length > 0) throw new ConfigError(issues)
  if (config.database) config.database = withPasswordFallbacks(config.database as DatabaseConfig, env)
  return Object.freeze(config) as Pick<Config, S>
}

function withPasswordFallbacks(database: DatabaseConfig, env: NodeJS.ProcessEnv): DatabaseConfig {
  const password = database.password ?? blankToUndefined(env.PGPASSWORD)
  if (password !== undefined) return {...database, password, passfile: undefined}
  const passfile = blankToUndefined(env.PGPASSFILE) ?? (existsSync(DEFAULT_PASSFILE) ? DEFAULT_PASSFILE : undefined)
  return {...database, password: undefined, passfile}
}

function exampleOf(variable: string): string | undefined {
  return Object.values(sections).some((section) => section.settings.includes(variable as SettingName))
    ? setting(variable as SettingName).example
    : undefined
}

function blankToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}
