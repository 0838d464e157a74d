import {z} from 'zod'

import {CODECS, CODEC_NAMES, CodecName} from '../compress/codecs'
import {defaultCompressionThreads, threadPoolSize} from '../compress/defaults'
import {defineSection, duration, flag, intInRange, requiredText} from './fields'

/** Sections every backup command uses: database, naming, retention, storage, logging, compression. */

export interface DatabaseConfig {
  host: string
  port: number
  database: string
  user: string
  /** DB_PASSWORD, else PGPASSWORD. */
  password?: string
  /** Which variable `password` came from, for messages. */
  passwordSource?: 'DB_PASSWORD' | 'PGPASSWORD'
  /** Used when no password is set: PGPASSFILE, else /run/secrets/pgpass, else ~/.pgpass, when it exists. */
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

export interface LogicalDumpConfig {
  /** pg_dump --no-owner --no-privileges: objects restored belong to whoever restores them (see README "Ownership and privileges"). */
  noOwner: boolean
}

export interface CompressionConfig {
  /** COMPRESSION: gzip (default) or zstd. */
  codec: CodecName
  level: number
  threads: number
}

/** The password fallbacks (PGPASSWORD, pgpass files) come from the environment: loadConfig adds them. */
export const database = defineSection(
  {
    DB_HOST: requiredText(),
    DB_PORT: intInRange(1, 65_535).default(5432),
    DB_NAME: requiredText().max(63, {message: 'must be at most 63 characters (the PostgreSQL identifier limit)'}),
    DB_USER: z.string().default('postgres'),
    DB_PASSWORD: z.string().optional(),
  },
  (object) =>
    object.transform(
      (data): DatabaseConfig => ({host: data.DB_HOST, port: data.DB_PORT, database: data.DB_NAME, user: data.DB_USER, password: data.DB_PASSWORD}),
    ),
)

export const namePrefix = defineSection(
  {
    BACKUP_NAME_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, {
        message: 'must start with a letter or digit and contain only letters, digits, "_" and "-" (at most 64)',
      })
      .default('backup'),
  },
  (object) => object.transform((data) => data.BACKUP_NAME_PREFIX),
)

export const retention = defineSection(
  {
    RETENTION_DAYS: intInRange(0, 36_500).default(7),
    BACKUPS_TO_RETAIN: intInRange(1, 1_000_000).optional(),
    ORPHAN_GRACE: duration.default(24 * 3600 * 1000),
  },
  (object) =>
    object.transform(
      (data): RetentionConfig => ({retentionDays: data.RETENTION_DAYS, backupsToRetain: data.BACKUPS_TO_RETAIN, orphanGraceMs: data.ORPHAN_GRACE}),
    ),
)

export const storageBackend = defineSection(
  {
    // Backend names are lowercase; STORAGE_BACKEND=S3 means s3 (one spelling reaches the registry).
    STORAGE_BACKEND: z
      .string()
      .trim()
      .toLowerCase()
      .regex(/^[a-z0-9][a-z0-9-]*$/, {message: 'must be a backend name such as local or s3'})
      .default('local'),
  },
  (object) => object.transform((data) => data.STORAGE_BACKEND),
)

export const logging = defineSection(
  {
    LOG_FORMAT: z.enum(['json', 'plain'], {message: 'must be json or plain'}).optional(),
    LOG_LEVEL: z
      .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], {
        message: 'must be one of trace, debug, info, warn, error, fatal, silent',
      })
      .default('info'),
  },
  (object) => object.transform((data): LoggingConfig => ({format: data.LOG_FORMAT, level: data.LOG_LEVEL})),
)

// --- COMPRESSION (codec choice, issue 15): the codec, and a level checked against that codec's range ---
const codecName = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.enum(CODEC_NAMES, {message: `must be one of ${CODEC_NAMES.join(', ')}`}))
  .default('gzip')

/** The level's range depends on COMPRESSION: a whole number here, its range checked below. */
const codecLevel = z
  .string()
  .regex(/^\d+$/, {message: `must be a whole number (${CODEC_NAMES.map((name) => `${CODECS[name].minLevel}–${CODECS[name].maxLevel} for ${name}`).join(', ')})`})
  .transform(Number)

export const compression = defineSection(
  {
    COMPRESSION: codecName,
    COMPRESSION_LEVEL: codecLevel.optional(),
    COMPRESSION_THREADS: intInRange(1, 256).optional(),
  },
  (object) =>
    object
      .superRefine((data, ctx) => {
        const codec = CODECS[data.COMPRESSION]
        const level = data.COMPRESSION_LEVEL
        if (level !== undefined && (level < codec.minLevel || level > codec.maxLevel)) {
          ctx.addIssue({code: 'custom', path: ['COMPRESSION_LEVEL'], message: `must be from ${codec.minLevel} to ${codec.maxLevel} with COMPRESSION=${codec.name}, got ${level}`})
        }
      })
      .refine((data) => data.COMPRESSION_THREADS === undefined || data.COMPRESSION_THREADS < threadPoolSize(), {
        path: ['COMPRESSION_THREADS'],
        message: `must be below libuv's thread pool size (${threadPoolSize()}); start dbb with UV_THREADPOOL_SIZE set higher to use more threads`,
        // Only for a valid number: "all" or 257 already got their one issue above.
        when: (payload) => payload.issues.length === 0,
      })
      .transform(
        (data): CompressionConfig => ({
          codec: data.COMPRESSION,
          level: data.COMPRESSION_LEVEL ?? CODECS[data.COMPRESSION].defaultLevel,
          threads: data.COMPRESSION_THREADS ?? defaultCompressionThreads(),
        }),
      ),
)

export const logicalDump = defineSection({BACKUP_NO_OWNER: flag(false)}, (object) =>
  object.transform((data): LogicalDumpConfig => ({noOwner: data.BACKUP_NO_OWNER})),
)
