import {existsSync} from 'node:fs'
import {Cron} from 'croner'
import {z} from 'zod'

import {DEFAULT_COMPRESSION_LEVEL, defaultCompressionThreads, threadPoolSize} from './compress/defaults'
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

const MIN_API_TOKEN_LENGTH = 16

const serverSchema = z.object({
  API_TOKEN: requiredText().refine((token) => token.length >= MIN_API_TOKEN_LENGTH, {
    message: `must be at least ${MIN_API_TOKEN_LENGTH} characters; generate one with: openssl rand -hex 32`,
  }),
  HTTP_PORT: intInRange(0, 65_535).default(8080),
  HTTP_HOST: z.string().default('0.0.0.0'),
  SHUTDOWN_GRACE: duration.default(30_000),
})

const scheduleSchema = z
  .object({
    // No default here: the default (24h) applies only when BACKUP_SCHEDULE is unset, see below.
    BACKUP_INTERVAL: duration.optional(),
    BACKUP_SCHEDULE: z.string().optional(),
    // Only read with BACKUP_SCHEDULE: a container's TZ must not stop an interval-scheduled serve.
    TZ: z.string().optional(),
  })
  .superRefine((schedule, ctx) => {
    if (schedule.BACKUP_SCHEDULE === undefined) return
    if (schedule.BACKUP_INTERVAL !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['BACKUP_SCHEDULE'],
        message: 'cannot be combined with BACKUP_INTERVAL: set only one (BACKUP_INTERVAL=24h, or BACKUP_SCHEDULE="0 3 * * *")',
      })
      return
    }

    if (schedule.TZ !== undefined && !isTimeZone(schedule.TZ)) {
      ctx.addIssue({code: 'custom', path: ['TZ'], message: 'is not an IANA time zone name'})
      return
    }

    const problem = cronProblem(schedule.BACKUP_SCHEDULE, schedule.TZ)
    if (problem) ctx.addIssue({code: 'custom', path: ['BACKUP_SCHEDULE'], message: problem})
  })

export const DEFAULT_BACKUP_INTERVAL_MS = 24 * 3600 * 1000

const flag = (fallback: boolean) => z.stringbool({error: 'must be true or false'}).default(fallback)

// Continuous archiving (src/wal, src/backup/base-backup.ts, src/check): each schema yields its typed config directly.
const baseBackupSchema = z
  .object({
    BASE_BACKUP_WAL_METHOD: z.enum(['fetch', 'none'], {message: 'must be fetch or none'}).default('fetch'),
    BASE_BACKUP_CHECKPOINT: z.enum(['fast', 'spread'], {message: 'must be fast or spread'}).default('fast'),
  })
  .transform((data) => ({walMethod: data.BASE_BACKUP_WAL_METHOD, checkpoint: data.BASE_BACKUP_CHECKPOINT}))

const compressionSchema = z
  .object({
    COMPRESSION_LEVEL: intInRange(1, 9).default(DEFAULT_COMPRESSION_LEVEL),
    COMPRESSION_THREADS: intInRange(1, 256).optional(),
  })
  .refine((data) => data.COMPRESSION_THREADS === undefined || data.COMPRESSION_THREADS < threadPoolSize(), {
    path: ['COMPRESSION_THREADS'],
    message: `must be below libuv's thread pool size (${threadPoolSize()}); start dbb with UV_THREADPOOL_SIZE set higher to use more threads`,
    // Only for a valid number: "all" or 257 already got their one issue above.
    when: (payload) => payload.issues.length === 0,
  })
  .transform((data) => ({level: data.COMPRESSION_LEVEL, threads: data.COMPRESSION_THREADS ?? defaultCompressionThreads()}))

const walStreamingSchema = z
  .object({
    WAL_STREAMING: flag(false),
    WAL_STREAMING_SLOT: z
      .string()
      .regex(/^[a-z0-9_]{1,63}$/, {message: 'must be lowercase letters, digits and "_" (a replication slot name)'})
      .default('dbb'),
    WAL_STREAMING_DIR: z.string().optional(),
  })
  .transform((data) => ({enabled: data.WAL_STREAMING, slot: data.WAL_STREAMING_SLOT, spoolDir: data.WAL_STREAMING_DIR}))

const checkSchema = z
  .object({
    BASE_BACKUP_INTERVAL_MINUTES: intInRange(1, 5_256_000).default(10_080),
    CHECKPOINT_TIMEOUT_SECONDS: intInRange(1, 31_536_000).default(300),
    CHECK_BASE_BACKUP: flag(true),
    CHECK_WAL: flag(true),
    CHECK_LOGICAL_BACKUP: flag(true),
  })
  .transform((data) => ({
    baseBackupIntervalMs: data.BASE_BACKUP_INTERVAL_MINUTES * 60_000,
    checkpointTimeoutMs: data.CHECKPOINT_TIMEOUT_SECONDS * 1000,
    baseBackup: data.CHECK_BASE_BACKUP,
    wal: data.CHECK_WAL,
    logicalBackup: data.CHECK_LOGICAL_BACKUP,
  }))

const httpUrl = z.url({protocol: /^https?$/, error: 'must be an http(s) URL'})

const slackSchema = z
  .object({
    SLACK_TOKEN: z.string().optional(),
    SLACK_WEBHOOK_URL: httpUrl.optional(),
    SLACK_CHANNEL: z.string().default('sysadmin'),
    SLACK_MESSAGE_SUFFIX: z.string().optional(),
    SLACK_API_URL: httpUrl.default('https://slack.com/api'),
  })
  .transform((data) => ({
    token: data.SLACK_TOKEN,
    webhookUrl: data.SLACK_WEBHOOK_URL,
    channel: data.SLACK_CHANNEL.replace(/^#/, ''),
    messageSuffix: data.SLACK_MESSAGE_SUFFIX,
    apiUrl: data.SLACK_API_URL.replace(/\/+$/, ''),
  }))

const archivingSchema = z
  .object({
    BASE_BACKUP_INTERVAL: duration.optional(),
    BASE_BACKUP_SCHEDULE: z.string().optional(),
    TZ: z.string().optional(),
    CHECK_INTERVAL: duration.optional(),
  })
  .superRefine((data, ctx) => {
    if (data.BASE_BACKUP_SCHEDULE === undefined) return
    if (data.BASE_BACKUP_INTERVAL !== undefined) {
      ctx.addIssue({code: 'custom', path: ['BASE_BACKUP_SCHEDULE'], message: 'cannot be combined with BASE_BACKUP_INTERVAL: set only one'})
      return
    }

    // Named here, or croner's complaint about the zone would be reported against BASE_BACKUP_SCHEDULE.
    if (data.TZ !== undefined && !isTimeZone(data.TZ)) {
      ctx.addIssue({code: 'custom', path: ['TZ'], message: 'is not an IANA time zone name'})
      return
    }

    const problem = cronProblem(data.BASE_BACKUP_SCHEDULE, data.TZ)
    if (problem) ctx.addIssue({code: 'custom', path: ['BASE_BACKUP_SCHEDULE'], message: problem})
  })
  .transform((data) => {
    let baseBackupSchedule: ScheduleConfig | undefined
    if (data.BASE_BACKUP_SCHEDULE !== undefined) baseBackupSchedule = {kind: 'cron', expression: data.BASE_BACKUP_SCHEDULE.trim(), timezone: data.TZ}
    else if (data.BASE_BACKUP_INTERVAL !== undefined) baseBackupSchedule = {kind: 'interval', intervalMs: data.BASE_BACKUP_INTERVAL}
    return {baseBackupSchedule, checkIntervalMs: data.CHECK_INTERVAL}
  })

export type ArchivingConfig = z.infer<typeof archivingSchema>
export type BaseBackupConfig = z.infer<typeof baseBackupSchema>
export type WalStreamingConfig = z.infer<typeof walStreamingSchema>
export type CompressionConfig = z.infer<typeof compressionSchema>
export type CheckConfig = z.infer<typeof checkSchema>
export type SlackConfig = z.infer<typeof slackSchema>

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

export interface ServerConfig {
  apiToken: string
  port: number
  host: string
  shutdownGraceMs: number
}

export type ScheduleConfig = {kind: 'interval'; intervalMs: number} | {kind: 'cron'; expression: string; timezone?: string}

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
  server: ServerConfig
  schedule: ScheduleConfig
  baseBackup: BaseBackupConfig
  archiving: ArchivingConfig
  walStreaming: WalStreamingConfig
  compression: CompressionConfig
  check: CheckConfig
  slack: SlackConfig
}

const sections = {
  database: databaseSchema,
  namePrefix: backupSchema,
  retention: retentionSchema,
  storageBackend: storageSchema,
  logging: loggingSchema,
  server: serverSchema,
  schedule: scheduleSchema,
  baseBackup: baseBackupSchema,
  archiving: archivingSchema,
  walStreaming: walStreamingSchema,
  compression: compressionSchema,
  check: checkSchema,
  slack: slackSchema,
} as const

export type Section = keyof typeof sections

/** The settings each section reads: what a command that needs the section must declare as flags. */
export const SECTION_SETTINGS: Record<Section, SettingName[]> = {
  database: ['DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD'],
  namePrefix: ['BACKUP_NAME_PREFIX'],
  retention: ['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE'],
  storageBackend: ['STORAGE_BACKEND'],
  logging: ['LOG_FORMAT', 'LOG_LEVEL'],
  server: ['API_TOKEN', 'HTTP_PORT', 'HTTP_HOST', 'SHUTDOWN_GRACE'],
  schedule: ['BACKUP_INTERVAL', 'BACKUP_SCHEDULE', 'TZ'],
  baseBackup: ['BASE_BACKUP_WAL_METHOD', 'BASE_BACKUP_CHECKPOINT'],
  archiving: ['BASE_BACKUP_INTERVAL', 'BASE_BACKUP_SCHEDULE', 'TZ', 'CHECK_INTERVAL'],
  walStreaming: ['WAL_STREAMING', 'WAL_STREAMING_SLOT', 'WAL_STREAMING_DIR'],
  compression: ['COMPRESSION_LEVEL', 'COMPRESSION_THREADS'],
  check: ['BASE_BACKUP_INTERVAL_MINUTES', 'CHECKPOINT_TIMEOUT_SECONDS', 'CHECK_BASE_BACKUP', 'CHECK_WAL', 'CHECK_LOGICAL_BACKUP'],
  slack: ['SLACK_TOKEN', 'SLACK_WEBHOOK_URL', 'SLACK_CHANNEL', 'SLACK_MESSAGE_SUFFIX', 'SLACK_API_URL'],
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

      case 'server': {
        const server = data as z.infer<typeof serverSchema>
        config.server = {apiToken: server.API_TOKEN, port: server.HTTP_PORT, host: server.HTTP_HOST, shutdownGraceMs: server.SHUTDOWN_GRACE}
        break
      }

      case 'schedule': {
        const schedule = data as z.infer<typeof scheduleSchema>
        config.schedule =
          schedule.BACKUP_SCHEDULE === undefined
            ? {kind: 'interval', intervalMs: schedule.BACKUP_INTERVAL ?? DEFAULT_BACKUP_INTERVAL_MS}
            : {kind: 'cron', expression: schedule.BACKUP_SCHEDULE.trim(), timezone: schedule.TZ}
        break
      }

      case 'baseBackup':
      case 'archiving':
      case 'walStreaming':
      case 'compression':
      case 'check':
      case 'slack': {
        // These schemas transform to their config shape themselves.
        Object.assign(config, {[section]: data})
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

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', {timeZone: zone})
    return true
  } catch {
    return false
  }
}

/** Why croner refuses the expression (5 to 7 fields, seconds allowed), or undefined when it is valid. */
function cronProblem(expression: string, timezone: string | undefined): string | undefined {
  try {
    const job = new Cron(expression.trim(), {paused: true, timezone})
    const next = job.nextRun()
    job.stop()
    return next ? undefined : 'never fires (no future time matches it)'
  } catch (error) {
    return `is not a cron expression: ${error instanceof Error ? error.message.replace(/^CronPattern: /, '') : String(error)}`
  }
}

function blankToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}

const SETTING_EXAMPLES: Record<string, string> = Object.fromEntries(
  Object.values(SECTION_SETTINGS)
    .flat()
    .map((name) => [name, setting(name).example]),
)
