import {existsSync} from 'node:fs'
import {z} from 'zod'

import {parseDuration} from './duration'
import {ConfigError, ConfigIssue} from './errors'
import {SettingName, setting} from './settings'

/**
 * One place for configuration: zod schemas keyed by environment variable, validated once at the
 * start of a command into a frozen, typed config. Each command asks only for the sections it
 * uses (`backup list` needs no database settings). Every problem becomes one line naming the
 * variable, what is wrong, and an example (see ConfigError).
 */

const intInRange = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, {message: `must be a whole number from ${min} to ${max}`})
    .transform(Number)
    .pipe(z.number().int().min(min, {message: `must be at least ${min}`}).max(max, {message: `must be at most ${max}`}))

const duration = z.string().transform((text, ctx) => {
  const milliseconds = parseDuration(text)
  if (milliseconds === undefined || milliseconds <= 0) {
    ctx.addIssue({code: 'custom', message: `"${text}" is not a duration (use e.g. 24h, 30m, PT24H, P1D)`})
    return z.NEVER
  }

  return milliseconds
})

const requiredText = () => z.string({error: (issue) => (issue.input === undefined ? 'is required' : 'must be text')})

const databaseSchema = z.object({
  DB_HOST: requiredText(),
  DB_PORT: intInRange(1, 65_535).default(5432),
  DB_NAME: requiredText().max(63, {message: 'must be at most 63 characters (the PostgreSQL identifier limit)'}),
  DB_USER: z.string().default('postgres'),
  DB_PASSWORD: z.string().optional(),
})

const backupSchema = z.object({
  BACKUP_NAME_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, {
      message: 'must start with a letter or digit and contain only letters, digits, "_" and "-" (at most 64)',
    })
    .default('backup'),
})

const retentionSchema = z.object({
  RETENTION_DAYS: intInRange(0, 36_500).default(7),
  BACKUPS_TO_RETAIN: intInRange(1, 1_000_000).optional(),
  ORPHAN_GRACE: duration.default(24 * 3600 * 1000),
})

const storageSchema = z.object({
  STORAGE_BACKEND: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]*$/, {message: 'must be a backend name such as local or s3'})
    .default('local'),
})

const loggingSchema = z.object({
  LOG_FORMAT: z.enum(['json', 'plain'], {message: 'must be json or plain'}).optional(),
  LOG_LEVEL: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], {
      message: 'must be one of trace, debug, info, warn, error, fatal, silent',
    })
    .default('info'),
})

export interface DatabaseConfig {
  host: string
  port: number
  database: string
  user: string
  /** DB_PASSWORD, else PGPASSWORD. */
  password?: string
  /** Used when no password is set: PGPASSFILE, else /run/secrets/pgpass when it exists. */
  passfile?: string
}

export interface RetentionConfig {
  retentionDays: number
  backupsToRetain?: number
  orphanGraceMs: number
}

export interface LoggingConfig {
  format?: 'json' | 'plain'
  level: string
}

export interface Config {
  database: DatabaseConfig
  namePrefix: string
  retention: RetentionConfig
  storageBackend: string
  logging: LoggingConfig
}

const sections = {
  database: databaseSchema,
  namePrefix: backupSchema,
  retention: retentionSchema,
  storageBackend: storageSchema,
  logging: loggingSchema,
} as const

export type Section = keyof typeof sections

/** The settings each section reads: what a command that needs the section must declare as flags. */
export const SECTION_SETTINGS: Record<Section, SettingName[]> = {
  database: ['DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD'],
  namePrefix: ['BACKUP_NAME_PREFIX'],
  retention: ['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE'],
  storageBackend: ['STORAGE_BACKEND'],
  logging: ['LOG_FORMAT', 'LOG_LEVEL'],
}

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
  const parsed: Record<string, Record<string, unknown>> = {}
  for (const section of wanted) {
    const input = Object.fromEntries(SECTION_SETTINGS[section].map((name) => [name, blankToUndefined(values[name])]))
    const result = sections[section].safeParse(input)
    if (result.success) {
      parsed[section] = result.data
    } else {
      for (const issue of result.error.issues) {
        const variable = String(issue.path[0] ?? section)
        const example = variable in SETTING_EXAMPLES ? SETTING_EXAMPLES[variable] : undefined
        issues.push({variable, message: issue.message, example})
      }
    }
  }

  if (issues.length > 0) throw new ConfigError(issues)

  const config: Partial<Config> = {}
  for (const section of wanted) {
    const data = parsed[section] as never
    switch (section) {
      case 'database': {
        config.database = toDatabaseConfig(data, env)
        break
      }

      case 'namePrefix': {
        config.namePrefix = (data as z.infer<typeof backupSchema>).BACKUP_NAME_PREFIX
        break
      }

      case 'retention': {
        const retention = data as z.infer<typeof retentionSchema>
        config.retention = {
          retentionDays: retention.RETENTION_DAYS,
          backupsToRetain: retention.BACKUPS_TO_RETAIN,
          orphanGraceMs: retention.ORPHAN_GRACE,
        }
        break
      }

      case 'storageBackend': {
        config.storageBackend = (data as z.infer<typeof storageSchema>).STORAGE_BACKEND
        break
      }

      case 'logging': {
        const logging = data as z.infer<typeof loggingSchema>
        config.logging = {format: logging.LOG_FORMAT, level: logging.LOG_LEVEL}
        break
      }
    }
  }

  return Object.freeze(config) as Pick<Config, S>
}

function toDatabaseConfig(data: z.infer<typeof databaseSchema>, env: NodeJS.ProcessEnv): DatabaseConfig {
  const password = data.DB_PASSWORD ?? blankToUndefined(env.PGPASSWORD)
  let passfile: string | undefined
  if (password === undefined) {
    passfile = blankToUndefined(env.PGPASSFILE) ?? (existsSync(DEFAULT_PASSFILE) ? DEFAULT_PASSFILE : undefined)
  }

  return {host: data.DB_HOST, port: data.DB_PORT, database: data.DB_NAME, user: data.DB_USER, password, passfile}
}

function blankToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}

const SETTING_EXAMPLES: Record<string, string> = Object.fromEntries(
  Object.values(SECTION_SETTINGS)
    .flat()
    .map((name) => [name, setting(name).example]),
)
