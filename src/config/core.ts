import {CODECS, CodecName} from '../compress/codecs'
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
  // Tiered retention (issue 20), see src/backup/retention-tiers.ts.
  keepDays?: number
  keepWeeks?: number
  keepMonths?: number
}

export interface LoggingConfig {
  format?: 'json' | 'plain'
  level: string
}

/** pg_dump's output format as stored (compressed by dbb's codec either way). */
export type DumpFormat = 'plain' | 'custom'

export interface LogicalDumpConfig {
  /** pg_dump --no-owner --no-privileges: objects restored belong to whoever restores them (see README "Ownership and privileges"). */
  noOwner: boolean
  /** BACKUP_FORMAT: plain SQL (psql) or pg_dump's custom archive (pg_restore: parallel and selective restore). */
  format?: DumpFormat
  // --- restore drills (issue 19) ---
  /** Record a per-table checksum of the rows besides the row count (src/backup/contents-record.ts). */
  recordChecksums?: boolean
}

export interface CompressionConfig {
  /** COMPRESSION: gzip (default) or zstd. */
  codec: CodecName
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

export const retention = defineSection(['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE', 'BACKUP_KEEP_DAYS', 'BACKUP_KEEP_WEEKS', 'BACKUP_KEEP_MONTHS'], (object) =>
  object.transform(
    (data): RetentionConfig => ({
      retentionDays: data.RETENTION_DAYS,
      backupsToRetain: data.BACKUPS_TO_RETAIN,
      orphanGraceMs: data.ORPHAN_GRACE,
      // Tiered retention (issue 20): unset or 0 turns a tier off.
      keepDays: data.BACKUP_KEEP_DAYS,
      keepWeeks: data.BACKUP_KEEP_WEEKS,
      keepMonths: data.BACKUP_KEEP_MONTHS,
    }),
  ),
)

export const storageBackend = defineSection(['STORAGE_BACKEND'], (object) => object.transform((data) => data.STORAGE_BACKEND))

export const logging = defineSection(['LOG_FORMAT', 'LOG_LEVEL'], (object) =>
  object.transform((data): LoggingConfig => ({format: data.LOG_FORMAT, level: data.LOG_LEVEL})),
)

export const compression = defineSection(['COMPRESSION', 'COMPRESSION_LEVEL', 'COMPRESSION_THREADS'], (object) =>
  object
    // The level's range depends on the codec (issue 15): gzip 1–9, zstd 1–19 (src/compress/codecs.ts).
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

export const logicalDump = defineSection(['BACKUP_NO_OWNER', 'BACKUP_RECORD_CHECKSUMS', 'BACKUP_FORMAT'], (object) =>
  object.transform((data): LogicalDumpConfig => ({noOwner: data.BACKUP_NO_OWNER, recordChecksums: data.BACKUP_RECORD_CHECKSUMS, format: data.BACKUP_FORMAT})),
)

// Several databases and cluster globals (issue 20): DB_NAMES, BACKUP_GLOBALS, GLOBALS_NO_ROLE_PASSWORDS.

export interface DatabasesConfig {
  /** DB_NAMES: the databases of one run, or `all` (every connectable non-template database); undefined: DB_NAME alone, as before. */
  names?: string[] | 'all'
  /** BACKUP_GLOBALS: store pg_dumpall --globals-only with each run (default: on with DB_NAMES, off without). */
  globals: boolean
  /** GLOBALS_NO_ROLE_PASSWORDS: pg_dumpall --no-role-passwords (managed services forbid reading pg_authid). */
  noRolePasswords: boolean
}

export const databases = defineSection(['DB_NAMES', 'BACKUP_GLOBALS', 'GLOBALS_NO_ROLE_PASSWORDS'], (object) =>
  object.transform((data): DatabasesConfig => {
    return {names: data.DB_NAMES, globals: data.BACKUP_GLOBALS ?? data.DB_NAMES !== undefined, noRolePasswords: data.GLOBALS_NO_ROLE_PASSWORDS}
  }),
)
