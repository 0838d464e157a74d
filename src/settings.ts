import {Flags} from '@oclif/core'

/**
 * Every setting dbb reads, in one catalog: the environment variable, the flag that mirrors it,
 * and an example of a valid value for error messages. Commands pick the settings they use with
 * `settingFlags(...)`, so each is declared statically (oclif's manifest and `--help` see it) and
 * bound to its variable with `env:`. Values stay strings here; src/config.ts validates and types
 * them, so every problem is reported with the variable's name, not the flag parser's wording.
 */
export interface SettingSpec {
  env: string
  flag: string
  summary: string
  example: string
  /** Never logged or echoed back. */
  secret?: boolean
}

const catalog = {
  DB_HOST: {flag: 'db-host', summary: 'PostgreSQL host name or address.', example: 'db.internal'},
  DB_PORT: {flag: 'db-port', summary: 'PostgreSQL port (default 5432).', example: '5432'},
  DB_NAME: {flag: 'db-name', summary: 'Database to back up.', example: 'app'},
  DB_USER: {flag: 'db-user', summary: 'PostgreSQL user (default postgres).', example: 'postgres'},
  DB_PASSWORD: {
    flag: 'db-password',
    summary: 'Password; else PGPASSWORD, else a pgpass file (PGPASSFILE or /run/secrets/pgpass).',
    example: '<secret>',
    secret: true,
  },
  BACKUP_NAME_PREFIX: {flag: 'name-prefix', summary: 'Prefix of backup ids (default backup).', example: 'backup'},
  RETENTION_DAYS: {
    flag: 'retention-days',
    summary: 'Delete backups older than this many days; 0 keeps them regardless of age (default 7).',
    example: '7',
  },
  BACKUPS_TO_RETAIN: {flag: 'backups-to-retain', summary: 'Keep at most this many newest backups.', example: '14'},
  ORPHAN_GRACE: {
    flag: 'orphan-grace',
    summary: 'Age after which a dump without a sidecar (a crashed backup) is deleted by prune (default 24h).',
    example: '24h',
  },
  STORAGE_BACKEND: {
    flag: 'storage',
    summary: 'Storage backend: local, s3, or any installed backend plugin (default local).',
    example: 'local',
  },
  LOG_FORMAT: {
    flag: 'log-format',
    summary: 'json or plain (default: plain on a terminal, json otherwise).',
    example: 'json',
  },
  LOG_LEVEL: {flag: 'log-level', summary: 'trace, debug, info, warn, error (default info).', example: 'info'},
} as const satisfies Record<string, Omit<SettingSpec, 'env'>>

export type SettingName = keyof typeof catalog

export const SETTING_NAMES = Object.keys(catalog) as SettingName[]

export function setting(name: SettingName): SettingSpec {
  return {env: name, ...catalog[name]}
}

const GROUPS: Partial<Record<SettingName, string>> = {
  DB_HOST: 'DATABASE',
  DB_PORT: 'DATABASE',
  DB_NAME: 'DATABASE',
  DB_USER: 'DATABASE',
  DB_PASSWORD: 'DATABASE',
  BACKUP_NAME_PREFIX: 'BACKUP',
  RETENTION_DAYS: 'RETENTION',
  BACKUPS_TO_RETAIN: 'RETENTION',
  ORPHAN_GRACE: 'RETENTION',
  STORAGE_BACKEND: 'STORAGE',
  LOG_FORMAT: 'LOGGING',
  LOG_LEVEL: 'LOGGING',
}

/** oclif string flags, bound to their environment variables, for the given settings. */
export function settingFlags(...names: SettingName[]) {
  return Object.fromEntries(names.map((name) => [catalog[name].flag, specToFlag(setting(name), GROUPS[name])]))
}

export function specToFlag(spec: SettingSpec, helpGroup?: string) {
  return Flags.string({env: spec.env, summary: spec.summary, helpGroup, helpValue: spec.secret ? '<secret>' : spec.example})
}

/**
 * Parsed flags back to a record keyed by variable name, the shape config validation reads.
 * oclif already folded each variable into its flag, and an empty variable counts as unset.
 */
export function valuesByVariable(specs: SettingSpec[], flags: Record<string, unknown>): Record<string, string | undefined> {
  const values: Record<string, string | undefined> = {}
  for (const spec of specs) {
    const value = flags[spec.flag]
    values[spec.env] = typeof value === 'string' && value !== '' ? value : undefined
  }

  return values
}

export const LOGGING_SETTINGS: SettingName[] = ['LOG_FORMAT', 'LOG_LEVEL']
export const DATABASE_SETTINGS: SettingName[] = ['DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD']
export const RETENTION_SETTINGS: SettingName[] = ['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE']
