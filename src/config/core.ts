import {defaultCompressionThreads, threadPoolSize} from '../compress/defaults'
import {defineSection} from './fields'

/**
 * Sections every backup command uses: database, naming, retention, storage, logging, compression.
 * Each setting's schema and default are declared in src/settings.ts; a section names the ones it
 * reads and turns them into typed config.
 */

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
  level: number
  threads: number
}

/** The password fallbacks (PGPASSWORD, pgpass files) come from the environment: loadConfig adds them. */
export const database = defineSection(['DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD'], (object) =>
  object.transform(
    (data): DatabaseConfig => ({host: data.DB_HOST, port: data.DB_PORT, database: data.DB_NAME, user: data.DB_USER, password: data.DB_PASSWORD}),
  ),
)

export const namePrefix = defineSection(['BACKUP_NAME_PREFIX'], (object) => object.transform((data) => data.BACKUP_NAME_PREFIX))

export const retention = defineSection(['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE'], (object) =>
  object.transform(
    (data): RetentionConfig => ({retentionDays: data.RETENTION_DAYS, backupsToRetain: data.BACKUPS_TO_RETAIN, orphanGraceMs: data.ORPHAN_GRACE}),
  ),
)

export const storageBackend = defineSection(['STORAGE_BACKEND'], (object) => object.transform((data) => data.STORAGE_BACKEND))

export const logging = defineSection(['LOG_FORMAT', 'LOG_LEVEL'], (object) =>
  object.transform((data): LoggingConfig => ({format: data.LOG_FORMAT, level: data.LOG_LEVEL})),
)

export const compression = defineSection(['COMPRESSION_LEVEL', 'COMPRESSION_THREADS'], (object) =>
  object
    .refine((data) => data.COMPRESSION_THREADS === undefined || data.COMPRESSION_THREADS < threadPoolSize(), {
      path: ['COMPRESSION_THREADS'],
      message: `must be below libuv's thread pool size (${threadPoolSize()}); start dbb with UV_THREADPOOL_SIZE set higher to use more threads`,
      // Only for a valid number: "all" or 257 already got their one issue above.
      when: (payload) => payload.issues.length === 0,
    })
    .transform((data): CompressionConfig => ({level: data.COMPRESSION_LEVEL, threads: data.COMPRESSION_THREADS ?? defaultCompressionThreads()})),
)

export const logicalDump = defineSection(['BACKUP_NO_OWNER'], (object) =>
  object.transform((data): LogicalDumpConfig => ({noOwner: data.BACKUP_NO_OWNER})),
)
