import type {Interfaces} from '@oclif/core'
import type {z} from 'zod'

import {CODECS, CODEC_NAMES} from './compress/codecs'
import {ConfigError, ConfigIssue} from './errors'
import {fileVariable, readSecretFiles, registerSecret} from './secrets'

/**
 * Every setting dbb reads, each declared ONCE, here: its environment variable (the key), the flag
 * that mirrors it, the help group, a one-line summary (and, where a command needs other words,
 * `summaryFor`), an example for error messages and `--help`, whether it is secret, its default,
 * which commands take it, and the zod schema of a value. Everything else is derived from the entry:
 *
 *  - each command's oclif flags: `settingFlagsFor('backup run')` (bound to the variable with `env:`;
 *    `--help` shows the summary, `X_FILE` for secrets and the declared default);
 *  - config parsing: src/config/ sections name the settings they read (`defineSection(['DB_HOST',
 *    …], finish)`) and get each one's schema with its default applied (src/config/fields.ts
 *    `settingField`): a declared default is parsed by the same schema as a user's value;
 *  - secrets: `secret: true` gives `X_FILE`, redaction in logs, errors and `--json` output;
 *  - the README's configuration tables: `npm run docs:settings` rewrites them between
 *    `<!-- settings … -->` / `<!-- settingsstop -->` markers (src/settings-docs.ts); a unit test
 *    fails when the README is stale.
 *
 * HOW TO ADD A SETTING: add one entry below (variable as key; `commands` lists the command ids,
 * `'*'` for every command; `value` returns the zod schema of a present, non-blank value; give
 * `default` as a user would type it, or `defaultText` when the default is computed in code, or
 * `required: true`). Then name the variable in the src/config/ section that turns it into typed
 * config (or add a section there and to the commands' `configSections`), add a bad-value case in
 * test/reliability/config-cases.ts, run `npm run build && npm run docs:settings`, and commit the
 * README and oclif.manifest.json. The tests in test/unit/settings-declaration.unit.test.ts say
 * what is missing. An entry, complete:
 *
 *   NOTIFY_TIMEOUT: {
 *     flag: 'notify-timeout',
 *     group: 'NOTIFY',
 *     summary: 'Longest wait for one notification target.',
 *     example: '10s',
 *     default: '10s',
 *     commands: ['backup run', 'serve'],
 *     value: (f) => f.duration,
 *   },
 *
 * Porting a setting written in the earlier style (a catalog entry `{flag, summary, example}`, a
 * GROUPS line, `X: schema.default(v)` in a section object, `settingFlags('X')` in commands): the
 * catalog entry gains `group`, `commands` (the commands that had `settingFlags('X')`), `value`
 * (the schema without `.default`/`.optional`) and `default` (v as a string) or `required: true`
 * (for `requiredText()`); the section lists 'X' among its names; `settingFlags(…)` lines go (a
 * command's flags are `settingFlagsFor('<command id>')`); "(default …)" leaves the summary.
 *
 * Schemas are functions of the field helpers (src/config/fields.ts), called only when config is
 * validated: this module must not load zod, because `dbb wal push --async` answers PostgreSQL
 * before it validates anything (src/wal/fast-cli.ts), and zod costs ~0.1 s per start.
 */

type Fields = typeof import('./config/fields')

/** Commands that take settings, as users type them. */
export type CommandId =
  | 'backup run'
  | 'backup list'
  | 'backup download'
  | 'prune'
  | 'restore'
  | 'serve'
  | 'check'
  | 'wal push'
  | 'wal fetch'
  | 'wal spool-upload'
  | 'notify test'
  | 'drill'

/** `commands: '*'`: a base flag of every dbb command (src/base-command.ts). */
export const EVERY_COMMAND = '*'

export type FlagChar = Interfaces.AlphabetLowercase | Interfaces.AlphabetUppercase

export interface SettingDeclaration {
  flag: string
  /** A one-letter flag (`-d`), rarely worth it: every setting also has its variable. */
  char?: FlagChar
  /** Heading of the flag in `--help`, and which README table lists it. */
  group: string
  /** One line, plain text, no default (that is `default`/`defaultText`). */
  summary: string
  /** Other words for some commands (`--db-name`: "Database to back up" vs "… to restore into"). */
  summaryFor?: Partial<Record<CommandId, string>>
  /** A valid value, shown in `--help` and in error messages (`example: DB_PORT=5432`). */
  example: string
  /** Applied when unset (or blank) and validated by `value` like any given value; shown in help and README. */
  default?: string
  /** When the default is computed in code (the cores available, the terminal): what it is, in words. */
  defaultText?: string
  /** Unset is an error ("is required") wherever a section reads it. */
  required?: true
  /** Never logged or echoed; may come from the file `X_FILE` names. */
  secret?: true
  commands: readonly CommandId[] | typeof EVERY_COMMAND
  /** The schema of a present, non-blank value (a string from env or flag). */
  value: (fields: Fields) => z.ZodType<unknown, string>
  /** More for the README's Meaning column (markdown), after the summary. */
  docs?: string
}

/** A setting as help, `dbb backends`, resolution and the README see it: core's or a storage plugin's. */
export interface SettingSpec {
  env: string
  flag: string
  char?: FlagChar
  summary: string
  example: string
  secret?: boolean
  default?: string
  defaultText?: string
  required?: boolean
  docs?: string
}

const BACKUP_COMMANDS = ['backup run', 'serve'] as const
const STORAGE_COMMANDS = ['backup run', 'backup list', 'backup download', 'prune', 'restore', 'serve', 'check', 'wal push', 'wal fetch', 'wal spool-upload', 'drill'] as const

/** `dbb serve`'s logical backup interval when BACKUP_SCHEDULE is unset (src/config/server.ts). */
export const DEFAULT_BACKUP_INTERVAL = '24h'
/** How old the last passed restore drill may be before `dbb check` fails (a weekly drill, plus a day). */
export const DEFAULT_DRILL_MAX_AGE = '8d'
const MIN_API_TOKEN_LENGTH = 16

/** The commands that send notifications (src/notify): each takes every notification setting. */
/** The commands that run restore drills (`dbb drill`, serve's schedule). */
const DRILL_COMMANDS: readonly CommandId[] = ['drill', 'serve']

/** The commands that apply retention (src/backup/retention.ts). */
const RETENTION_COMMANDS: readonly CommandId[] = ['backup run', 'prune', 'serve']

const NOTIFY_COMMANDS: readonly CommandId[] = ['backup run', 'check', 'prune', 'serve', 'notify test', 'drill']

export const SETTINGS = {
  // ---- DATABASE
  DB_HOST: {
    flag: 'db-host',
    group: 'DATABASE',
    summary: 'PostgreSQL host name or address.',
    example: 'db.internal',
    required: true,
    commands: ['backup run', 'restore', 'serve', 'drill'],
    value: (f) => f.z.string(),
  },
  DB_PORT: {
    flag: 'db-port',
    group: 'DATABASE',
    summary: 'PostgreSQL port.',
    example: '5432',
    default: '5432',
    commands: ['backup run', 'restore', 'serve', 'drill'],
    value: (f) => f.intInRange(1, 65_535),
  },
  DB_NAME: {
    flag: 'db-name',
    group: 'DATABASE',
    summary: 'The database: the one backup run dumps, and the one restore replaces (unless --target-db).',
    summaryFor: {
      'backup run': 'Database to back up (pg_dump; --type base backs up the whole cluster).',
      serve: 'Database to back up.',
      restore: 'Database to restore into, replacing it (unless --target-db).',
    },
    example: 'app',
    required: true,
    commands: ['backup run', 'restore', 'serve', 'drill'],
    value: (f) => f.z.string().max(63, {message: 'must be at most 63 characters (the PostgreSQL identifier limit)'}),
  },
  DB_USER: {
    flag: 'db-user',
    group: 'DATABASE',
    summary: 'PostgreSQL user.',
    example: 'postgres',
    default: 'postgres',
    commands: ['backup run', 'restore', 'serve', 'drill'],
    value: (f) => f.z.string(),
  },
  DB_PASSWORD: {
    flag: 'db-password',
    group: 'DATABASE',
    summary: 'Password; else PGPASSWORD, else a pgpass file (PGPASSFILE, /run/secrets/pgpass, ~/.pgpass).',
    example: '<secret>',
    secret: true,
    commands: ['backup run', 'restore', 'serve', 'drill'],
    value: (f) => f.z.string(),
    docs: 'See [Secrets and passwords](#secrets-and-passwords).',
  },

  // ---- BACKUP
  BACKUP_NAME_PREFIX: {
    flag: 'name-prefix',
    group: 'BACKUP',
    summary: 'Prefix of backup ids: <prefix>_<UTC yyyyMMddTHHmmssZ>.sql.gz.',
    example: 'backup',
    default: 'backup',
    commands: ['backup run', 'backup list', 'prune', 'restore', 'serve', 'check', 'drill'],
    value: (f) =>
      f.z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, {
        message: 'must start with a letter or digit and contain only letters, digits, "_" and "-" (at most 64)',
      }),
  },
  BACKUP_NO_OWNER: {
    flag: 'backup-no-owner',
    group: 'BACKUP',
    summary: 'Dump without owners and GRANT/REVOKE (pg_dump --no-owner --no-privileges), for managed services whose roles differ.',
    example: 'true',
    default: 'false',
    commands: BACKUP_COMMANDS,
    value: (f) => f.boolean(),
    docs: 'See [Ownership and privileges](#ownership-and-privileges).',
  },
  BACKUP_FORMAT: {
    flag: 'backup-format',
    group: 'BACKUP',
    summary: "pg_dump's format: plain SQL (restore with psql) or custom (pg_dump -Fc; restore with pg_restore: parallel --jobs, selective --table/--schema, --list).",
    example: 'custom',
    default: 'plain',
    commands: BACKUP_COMMANDS,
    // directory and tar are pg_dump formats too, but not one stream dbb can compress and store as one object.
    value: (f) => f.z.enum(['plain', 'custom'], {message: 'must be plain or custom (directory and tar are not supported: they are not one stream; custom gives pg_restore --jobs from a file)'}),
    docs: 'See [Custom format](#custom-format). Globals (DB_NAMES runs) stay plain SQL. Archives may mix formats.',
  },

  // ---- RETENTION
  RETENTION_DAYS: {
    flag: 'retention-days',
    group: 'RETENTION',
    summary: 'Delete backups older than this many days; 0 keeps them regardless of age.',
    example: '7',
    default: '7',
    commands: ['backup run', 'prune', 'serve'],
    value: (f) => f.intInRange(0, 36_500),
  },
  BACKUPS_TO_RETAIN: {
    flag: 'backups-to-retain',
    group: 'RETENTION',
    summary: 'Keep at most this many newest backups.',
    example: '14',
    commands: ['backup run', 'prune', 'serve'],
    value: (f) => f.intInRange(1, 1_000_000),
  },
  ORPHAN_GRACE: {
    flag: 'orphan-grace',
    group: 'RETENTION',
    summary: 'Age after which leftovers of failed or crashed backups (a dump without a sidecar) are deleted by prune.',
    example: '24h',
    default: '24h',
    commands: ['backup run', 'prune', 'serve'],
    value: (f) => f.duration,
    docs: 'Durations: `30m`, `24h`, `PT6H`, `P1D`.',
  },

  // Tiered retention (issue 20; prodrigestivill's names and semantics, see src/backup/retention-tiers.ts).
  BACKUP_KEEP_DAYS: {
    flag: 'keep-days',
    group: 'RETENTION',
    summary: 'Also keep the newest backup of each of the last N days (UTC), whatever RETENTION_DAYS/BACKUPS_TO_RETAIN say; 0 is off.',
    example: '7',
    defaultText: 'off',
    commands: RETENTION_COMMANDS,
    value: (f) => f.intInRange(0, 36_500),
  },
  BACKUP_KEEP_WEEKS: {
    flag: 'keep-weeks',
    group: 'RETENTION',
    summary: 'Also keep the newest backup of each ISO week for N × 7 + 1 days; 0 is off.',
    example: '4',
    defaultText: 'off',
    commands: RETENTION_COMMANDS,
    value: (f) => f.intInRange(0, 5_200),
  },
  BACKUP_KEEP_MONTHS: {
    flag: 'keep-months',
    group: 'RETENTION',
    summary: 'Also keep the newest backup of each month for N × 31 + 1 days; 0 is off.',
    example: '6',
    defaultText: 'off',
    commands: RETENTION_COMMANDS,
    value: (f) => f.intInRange(0, 1_200),
  },

  // Several databases and cluster globals (issue 20; src/config/core.ts parses the list).
  DB_NAMES: {
    flag: 'db-names',
    group: 'DATABASE',
    summary: 'Back up several databases per run, each with its own ids, retention and latest: names separated by commas, or all (every connectable, non-template database).',
    example: 'app,billing',
    defaultText: 'DB_NAME alone',
    commands: ['backup run', 'serve'],
    value: (f) => f.databaseList,
  },
  BACKUP_GLOBALS: {
    flag: 'backup-globals',
    group: 'BACKUP',
    summary: 'Store the cluster globals (roles, memberships, tablespaces: pg_dumpall --globals-only) with each run.',
    example: 'true',
    defaultText: 'true with DB_NAMES, false without',
    commands: ['backup run', 'serve'],
    value: (f) => f.boolean(),
  },
  GLOBALS_NO_ROLE_PASSWORDS: {
    flag: 'globals-no-role-passwords',
    group: 'BACKUP',
    summary: 'Dump globals without role passwords (pg_dumpall --no-role-passwords), for managed services that forbid reading pg_authid.',
    example: 'true',
    default: 'false',
    commands: ['backup run', 'serve'],
    value: (f) => f.boolean(),
  },

  // ---- STORAGE
  STORAGE_BACKEND: {
    flag: 'storage',
    group: 'STORAGE',
    summary: 'Storage backend: local, s3, or any installed backend plugin (dbb backends); case does not matter.',
    example: 'local',
    default: 'local',
    commands: STORAGE_COMMANDS,
    // Backend names are lowercase; STORAGE_BACKEND=S3 means s3 (one spelling reaches the registry).
    value: (f) =>
      f.z
        .string()
        .trim()
        .toLowerCase()
        .regex(/^[a-z0-9][a-z0-9-]*$/, {message: 'must be a backend name such as local or s3'}),
    docs: 'Each backend adds its own settings (below, and `dbb backends`).',
  },

  // ---- LOGGING
  LOG_FORMAT: {
    flag: 'log-format',
    group: 'LOGGING',
    summary: 'json (pino) or plain.',
    example: 'json',
    defaultText: 'plain on a terminal, else json',
    commands: EVERY_COMMAND,
    value: (f) => f.z.enum(['json', 'plain'], {message: 'must be json or plain'}),
  },
  LOG_LEVEL: {
    flag: 'log-level',
    group: 'LOGGING',
    summary: 'trace, debug, info, warn, error, fatal or silent.',
    example: 'info',
    default: 'info',
    commands: EVERY_COMMAND,
    value: (f) =>
      f.z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], {
        message: 'must be one of trace, debug, info, warn, error, fatal, silent',
      }),
  },

  // ---- SERVER (dbb serve)
  API_TOKEN: {
    flag: 'api-token',
    group: 'SERVER',
    summary: 'Bearer token the REST API of dbb serve requires (at least 16 characters; openssl rand -hex 32).',
    example: '$(openssl rand -hex 32)',
    required: true,
    secret: true,
    commands: ['serve'],
    value: (f) =>
      f.z.string().refine((token) => token.length >= MIN_API_TOKEN_LENGTH, {
        message: `must be at least ${MIN_API_TOKEN_LENGTH} characters; generate one with: openssl rand -hex 32`,
      }),
    docs: 'Guards `/api/v1/*`.',
  },
  HTTP_PORT: {
    flag: 'http-port',
    group: 'SERVER',
    summary: 'Port dbb serve listens on (0 picks a free port, logged at start).',
    example: '8080',
    default: '8080',
    commands: ['serve'],
    value: (f) => f.intInRange(0, 65_535),
  },
  HTTP_HOST: {
    flag: 'http-host',
    group: 'SERVER',
    summary: 'Address dbb serve listens on.',
    example: '0.0.0.0',
    default: '0.0.0.0',
    commands: ['serve'],
    value: (f) => f.z.string(),
  },
  SHUTDOWN_GRACE: {
    flag: 'shutdown-grace',
    group: 'SERVER',
    summary: 'On SIGTERM or SIGINT, how long an in-flight backup may run before it is aborted.',
    example: '30s',
    default: '30s',
    commands: ['serve'],
    value: (f) => f.duration,
  },

  // ---- SCHEDULE (dbb serve; dbb check reads them for the logical backup's age)
  BACKUP_INTERVAL: {
    flag: 'backup-interval',
    group: 'SCHEDULE',
    summary: 'Scheduled backups this long after the last successful one (at least 1m; PT24H, P1D, 12h, 30m).',
    example: '24h',
    // Not `default`: it applies only when BACKUP_SCHEDULE is unset (src/config/server.ts).
    defaultText: `${DEFAULT_BACKUP_INTERVAL} (when BACKUP_SCHEDULE is unset)`,
    commands: ['serve', 'check'],
    value: (f) => f.scheduleInterval,
  },
  BACKUP_SCHEDULE: {
    flag: 'backup-schedule',
    group: 'SCHEDULE',
    summary: 'Scheduled backups by cron expression instead of an interval, e.g. "0 3 * * *"; not together with BACKUP_INTERVAL.',
    example: '"0 3 * * *"',
    commands: ['serve', 'check'],
    value: (f) => f.z.string(),
    docs: 'A 6th leading field means seconds, and must name a single second.',
  },
  TZ: {
    flag: 'timezone',
    group: 'SCHEDULE',
    summary: 'IANA time zone of BACKUP_SCHEDULE and BASE_BACKUP_SCHEDULE.',
    example: 'Europe/Berlin',
    defaultText: 'the system time zone',
    commands: ['serve', 'check', 'drill'],
    // Only read with a cron schedule: a container's TZ must not stop an interval-scheduled serve.
    value: (f) => f.z.string(),
  },

  // ---- COMPRESSION
  COMPRESSION: {
    flag: 'compression',
    group: 'COMPRESSION',
    summary: 'Codec of dumps, base backups and WAL: gzip (restore with gunzip) or zstd (smaller and faster; needs the zstd program; restore with zstd -d).',
    example: 'zstd',
    default: 'gzip',
    commands: BACKUP_COMMANDS,
    // Also read from the environment by every WAL push path (wal push, its fast path, the uploader).
    value: (f) => f.z.string().trim().toLowerCase().pipe(f.z.enum(CODEC_NAMES, {message: `must be one of ${CODEC_NAMES.join(', ')}`})),
    docs: 'Case does not matter. Archives may mix codecs: list, restore, download, prune and wal fetch read both.',
  },
  COMPRESSION_LEVEL: {
    flag: 'compression-level',
    group: 'COMPRESSION',
    summary: `Level of the codec: ${CODEC_NAMES.map((name) => `${name} ${CODECS[name].minLevel} fastest … ${CODECS[name].maxLevel} smallest`).join(', ')}.`,
    example: '1',
    defaultText: `the codec's: ${CODEC_NAMES.map((name) => `${CODECS[name].defaultLevel} for ${name}`).join(', ')}`,
    commands: BACKUP_COMMANDS,
    // The range depends on COMPRESSION: checked by the compression section (src/config/core.ts).
    value: (f) => f.z.string().regex(/^\d+$/, {message: `must be a whole number (${CODEC_NAMES.map((name) => `${CODECS[name].minLevel}–${CODECS[name].maxLevel} for ${name}`).join(', ')})`}).transform(Number),
    docs: 'See the trade-off below.',
  },
  COMPRESSION_THREADS: {
    flag: 'compression-threads',
    group: 'COMPRESSION',
    summary: "Threads compressing at once: the zstd or pigz program's workers (-T, -p), or blocks of dbb's in-process gzip. igzip (gzip at level 1 where it is installed) compresses on one thread, faster than pigz on two.",
    example: '2',
    defaultText: 'the cores available, at most UV_THREADPOOL_SIZE - 1',
    commands: BACKUP_COMMANDS,
    value: (f) => f.intInRange(1, 256),
  },

  // ---- ENCRYPTION (issue 20 item 4; src/encrypt, src/config/encryption.ts)
  ENCRYPTION_RECIPIENTS: {
    flag: 'encryption-recipients',
    group: 'ENCRYPTION',
    summary: 'Encrypt every stored object (dumps, globals, base backups) with age to these public keys: age1… recipients or SSH public keys (ssh-ed25519, ssh-rsa), separated by commas or newlines.',
    example: 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p',
    defaultText: 'unset: objects are stored unencrypted',
    commands: BACKUP_COMMANDS,
    value: (f) => f.ageRecipients,
    docs: 'Needs the `age` program. Public keys, not secrets; the sidecar records their SHA-256 fingerprints. Also read from the environment by every WAL push path (wal push, its fast path, the uploader, serve\'s streamer), as COMPRESSION is. See "Encryption".',
  },
  AGE_IDENTITY_FILE: {
    flag: 'age-identity-file',
    group: 'ENCRYPTION',
    summary: 'The age identity file (age-keygen output) or SSH private key that decrypts encrypted backups; needed only to restore, download --decrypt or drill them.',
    example: '/run/secrets/age-identity.txt',
    defaultText: 'unset: encrypted backups cannot be restored',
    commands: ['restore', 'backup download', 'drill', 'serve', 'wal fetch'],
    value: (f) => f.z.string(),
    docs: 'A path; the key stays in the file (dbb hands age the path, never the key). `restore --type base` writes it (the path) into restore_command.',
  },

  // ---- BASE BACKUP
  BASE_BACKUP_WAL_METHOD: {
    flag: 'base-wal-method',
    group: 'BASE BACKUP',
    summary: 'WAL in base backups: fetch (the backup includes the WAL it needs and restores on its own) or none (relies on the WAL archive).',
    example: 'fetch',
    default: 'fetch',
    commands: BACKUP_COMMANDS,
    value: (f) => f.z.enum(['fetch', 'none'], {message: 'must be fetch or none'}),
    docs: 'With `none` the server waits until the archive has the WAL.',
  },
  BASE_BACKUP_CHECKPOINT: {
    flag: 'base-checkpoint',
    group: 'BASE BACKUP',
    summary: 'Checkpoint before a base backup: fast (starts at once) or spread (spreads its I/O).',
    example: 'fast',
    default: 'fast',
    commands: BACKUP_COMMANDS,
    value: (f) => f.z.enum(['fast', 'spread'], {message: 'must be fast or spread'}),
  },
  BASE_BACKUP_INTERVAL: {
    flag: 'base-backup-interval',
    group: 'BASE BACKUP',
    summary: 'dbb serve: a base backup this long after the last one (e.g. 7d).',
    example: '7d',
    defaultText: 'off (unless BASE_BACKUP_SCHEDULE)',
    commands: ['serve'],
    value: (f) => f.scheduleInterval,
  },
  BASE_BACKUP_SCHEDULE: {
    flag: 'base-backup-schedule',
    group: 'BASE BACKUP',
    summary: 'dbb serve: base backups by cron expression, e.g. "0 2 * * 0" (TZ applies); not together with BASE_BACKUP_INTERVAL.',
    example: '"0 2 * * 0"',
    defaultText: 'off',
    commands: ['serve'],
    value: (f) => f.z.string(),
  },

  // ---- WAL STREAMING (dbb serve)
  WAL_STREAMING: {
    flag: 'wal-streaming',
    group: 'WAL STREAMING',
    summary: 'dbb serve: stream WAL with pg_receivewal instead of archive_command.',
    example: 'true',
    default: 'false',
    commands: ['serve'],
    value: (f) => f.boolean(),
  },
  WAL_STREAMING_SLOT: {
    flag: 'wal-streaming-slot',
    group: 'WAL STREAMING',
    summary: 'Replication slot pg_receivewal uses (created if missing).',
    example: 'dbb',
    default: 'dbb',
    commands: ['serve'],
    value: (f) => f.z.string().regex(/^[a-z0-9_]{1,63}$/, {message: 'must be lowercase letters, digits and "_" (a replication slot name)'}),
  },
  WAL_STREAMING_DIR: {
    flag: 'wal-streaming-dir',
    group: 'WAL STREAMING',
    summary: 'Local spool directory for streamed WAL; keep it on a volume so restarts resume without gaps.',
    example: '/var/lib/dbb/wal-spool',
    defaultText: '$TMPDIR/dbb-wal-spool-<slot>',
    commands: ['serve'],
    value: (f) => f.z.string(),
  },

  // ---- WAL ASYNC (wal push --async, wal fetch prefetch)
  WAL_SPOOL_DIR: {
    flag: 'wal-spool-dir',
    group: 'WAL ASYNC',
    summary: 'wal push --async: directory where segments wait (copied and fsynced) for the uploader; on durable, local storage writable by the server\'s user.',
    example: '/var/lib/dbb/wal-async',
    commands: ['wal push', 'wal spool-upload', 'serve'],
    value: (f) => f.z.string(),
  },
  WAL_SPOOL_MAX_SEGMENTS: {
    flag: 'wal-spool-max-segments',
    group: 'WAL ASYNC',
    summary: 'wal push --async: pushes fail (PostgreSQL retries) while this many files wait in the spool.',
    example: '64',
    // 64 segments of 16 MiB: 1 GiB of WAL may wait for storage before pushes start failing.
    default: '64',
    commands: ['wal push', 'wal spool-upload', 'serve'],
    value: (f) => f.intInRange(1, 1_000_000),
  },
  WAL_ASYNC_PARALLEL: {
    flag: 'wal-async-parallel',
    group: 'WAL ASYNC',
    summary: 'wal push --async: segments the uploader stores at once.',
    example: '4',
    default: '4',
    commands: ['wal push', 'wal spool-upload', 'serve'],
    value: (f) => f.intInRange(1, 64),
  },
  WAL_READ_AHEAD_DIR: {
    flag: 'wal-read-ahead-dir',
    group: 'WAL ASYNC',
    summary: "dbb serve: the server's pg_wal, named as PostgreSQL names it (the data directory's pg_wal, even if a link); serve then stores ready segments ahead of their push. Needs serve to run as pg_wal's owner.",
    example: '/var/lib/postgresql/data/pg_wal',
    commands: ['serve'],
    value: (f) => f.z.string(),
  },
  WAL_PREFETCH: {
    flag: 'wal-prefetch',
    group: 'WAL ASYNC',
    summary: 'wal fetch: segments downloaded ahead into WAL_SPOOL_DIR/fetch-queue while recovery replays (0 off; needs WAL_SPOOL_DIR).',
    example: '8',
    default: '8',
    // wal push and spool-upload validate the whole walAsync section (as the WAL fast path does from the environment).
    commands: ['wal push', 'wal spool-upload', 'serve'],
    value: (f) => f.intInRange(0, 256),
  },

  // ---- CHECK (dbb check; dbb serve runs it every CHECK_INTERVAL)
  CHECK_INTERVAL: {
    flag: 'check-interval',
    group: 'CHECK',
    summary: 'dbb serve: run the dbb check this often (e.g. 15m) and notify on failure (NOTIFY_URLS).',
    example: '15m',
    defaultText: 'off',
    commands: ['serve'],
    value: (f) => f.duration,
  },
  BASE_BACKUP_INTERVAL_MINUTES: {
    flag: 'base-backup-interval-minutes',
    group: 'CHECK',
    summary: 'dbb check: the newest base backup may be this old, plus 5 minutes.',
    example: '10080',
    default: '10080',
    commands: ['check', 'serve'],
    value: (f) => f.intInRange(1, 5_256_000),
  },
  CHECKPOINT_TIMEOUT_SECONDS: {
    flag: 'checkpoint-timeout-seconds',
    group: 'CHECK',
    summary: "dbb check: the newest archived WAL may be this old, plus 2 minutes (the server's archive_timeout/checkpoint_timeout).",
    example: '300',
    default: '300',
    commands: ['check', 'serve'],
    value: (f) => f.intInRange(1, 31_536_000),
  },
  CHECK_BASE_BACKUP: {
    flag: 'check-base-backup',
    group: 'CHECK',
    summary: 'dbb check: check the base backup age; true requires it, false turns it off.',
    example: 'false',
    defaultText: 'unset: checked once a base backup or archived WAL exists',
    commands: ['check', 'serve'],
    value: (f) => f.boolean(),
  },
  CHECK_WAL: {
    flag: 'check-wal',
    group: 'CHECK',
    summary: 'dbb check: check archived WAL (age and the chain from the newest base backup); true requires it, false turns it off.',
    example: 'false',
    defaultText: 'unset: checked once a base backup or archived WAL exists',
    commands: ['check', 'serve'],
    value: (f) => f.boolean(),
  },
  CHECK_LOGICAL_BACKUP: {
    flag: 'check-logical-backup',
    group: 'CHECK',
    summary: 'dbb check: check the logical backup age (one BACKUP_INTERVAL, or the gap between two BACKUP_SCHEDULE runs, plus 5 minutes); false turns it off.',
    example: 'false',
    default: 'true',
    commands: ['check', 'serve'],
    value: (f) => f.boolean(),
  },

  // ---- DRILL (restore drills, issue 19; src/drill, src/config/drill.ts)
  BACKUP_RECORD_CHECKSUMS: {
    flag: 'backup-record-checksums',
    group: 'DRILL',
    summary: "Record a checksum of every table's rows besides its row count, for restore drills to compare (reads every row once more).",
    example: 'true',
    default: 'false',
    commands: BACKUP_COMMANDS,
    value: (f) => f.boolean(),
  },
  DRILL_DB_HOST: {
    flag: 'drill-db-host',
    group: 'DRILL',
    summary: 'Server restore drills restore on; a dbb_drill_<hash> database is created and dropped there.',
    example: 'drills.internal',
    defaultText: 'DB_HOST',
    commands: DRILL_COMMANDS,
    value: (f) => f.z.string(),
  },
  DRILL_DB_PORT: {
    flag: 'drill-db-port',
    group: 'DRILL',
    summary: 'Port of the drill server.',
    example: '5432',
    defaultText: 'DB_PORT',
    commands: DRILL_COMMANDS,
    value: (f) => f.intInRange(1, 65_535),
  },
  DRILL_DB_USER: {
    flag: 'drill-db-user',
    group: 'DRILL',
    summary: 'User on the drill server; needs CREATEDB.',
    example: 'postgres',
    defaultText: 'DB_USER',
    commands: DRILL_COMMANDS,
    value: (f) => f.z.string(),
  },
  DRILL_DB_PASSWORD: {
    flag: 'drill-db-password',
    group: 'DRILL',
    summary: 'Password on the drill server.',
    example: '<secret>',
    secret: true,
    defaultText: 'as for DB_USER',
    commands: DRILL_COMMANDS,
    value: (f) => f.z.string(),
  },
  DRILL_INTERVAL: {
    flag: 'drill-interval',
    group: 'DRILL',
    summary: 'dbb serve: drill the newest logical backup this often.',
    example: '7d',
    defaultText: 'off (unless DRILL_SCHEDULE)',
    commands: DRILL_COMMANDS,
    value: (f) => f.scheduleInterval,
  },
  DRILL_SCHEDULE: {
    flag: 'drill-schedule',
    group: 'DRILL',
    summary: 'dbb serve: drills by cron expression instead, e.g. "0 5 * * 0" (TZ applies); not together with DRILL_INTERVAL.',
    example: '"0 5 * * 0"',
    defaultText: 'off',
    commands: DRILL_COMMANDS,
    value: (f) => f.z.string(),
  },
  DRILL_TYPE: {
    flag: 'drill-type',
    group: 'DRILL',
    summary: 'dbb serve: what scheduled drills (and POST /api/v1/drills) prove: logical (the newest logical backup) or base (a physical drill of the newest base backup and its WAL; needs PostgreSQL server binaries).',
    example: 'base',
    default: 'logical',
    commands: ['serve'],
    value: (f) => f.z.enum(['logical', 'base']),
  },
  DRILL_OS_USER: {
    flag: 'drill-os-user',
    group: 'DRILL',
    summary: 'dbb drill --type base as root: the OS user the private PostgreSQL server of a physical drill runs as (PostgreSQL refuses to run as root); ignored when dbb is not root.',
    example: 'postgres',
    default: 'postgres',
    commands: DRILL_COMMANDS,
    value: (f) => f.z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/i, 'must be an OS user name'),
  },
  DRILL_MAX_AGE: {
    flag: 'drill-max-age',
    group: 'DRILL',
    summary: 'dbb check: the last passed drill may be this old (checked once any drill ran).',
    example: '8d',
    default: DEFAULT_DRILL_MAX_AGE,
    commands: ['drill', 'serve', 'check'],
    value: (f) => f.duration,
  },

  // ---- NOTIFICATIONS (src/notify; the URL list is parsed in src/config/notify.ts)
  NOTIFY_URLS: {
    flag: 'notify-urls',
    group: 'NOTIFICATIONS',
    summary: 'Where notifications go, comma-separated URLs: slack://, slack+https://, webhook+https://, healthchecks+https://, smtp://, smtps:// (README "Notifications").',
    example: 'slack://xoxb-…@alerts,healthchecks+https://hc-ping.com/<uuid>',
    secret: true,
    commands: NOTIFY_COMMANDS,
    value: (f) => f.notifyUrls,
  },
  NOTIFY_WEBHOOK_SECRET: {
    flag: 'notify-webhook-secret',
    group: 'NOTIFICATIONS',
    summary: 'Key of the X-Dbb-Signature-256 HMAC-SHA256 header on webhook+ deliveries (at least 16 characters).',
    example: '$(openssl rand -hex 32)',
    secret: true,
    commands: NOTIFY_COMMANDS,
    value: (f) => f.z.string().min(16, {message: 'must be at least 16 characters (openssl rand -hex 32)'}),
  },
  NOTIFY_ON_SUCCESS: {
    flag: 'notify-on-success',
    group: 'NOTIFICATIONS',
    summary: 'Also notify good news: backup.succeeded, drill.passed.',
    example: 'true',
    default: 'false',
    commands: NOTIFY_COMMANDS,
    value: (f) => f.boolean(),
  },
  NOTIFY_TIMEOUT: {
    flag: 'notify-timeout',
    group: 'NOTIFICATIONS',
    summary: 'Limit of one delivery attempt (3 attempts at most); a command waits at most this long for deliveries before it exits.',
    example: '10s',
    default: '10s',
    commands: NOTIFY_COMMANDS,
    // A command waits this long at exit for deliveries: minutes would hold up a cron job.
    value: (f) => f.duration.refine((ms) => ms <= 5 * 60_000, {message: 'must be at most 5m (one delivery attempt; a command waits this long at exit)'}),
  },
  NOTIFY_REMINDER_INTERVAL: {
    flag: 'notify-reminder-interval',
    group: 'NOTIFICATIONS',
    summary: 'dbb serve: repeat a still-failing check or stalled WAL archiving this often.',
    example: '6h',
    default: '24h',
    commands: NOTIFY_COMMANDS,
    value: (f) => f.duration.refine((ms) => ms >= 60_000, {message: 'must be at least 1m (a reminder more often than that is noise)'}),
  },

  // ---- SLACK (alerts of dbb check and dbb serve)
  SLACK_TOKEN: {
    flag: 'slack-token',
    group: 'SLACK',
    summary: 'Alias: a Slack bot token (chat.postMessage), same as NOTIFY_URLS=slack://<token>@<SLACK_CHANNEL>.',
    example: '<secret>',
    secret: true,
    commands: NOTIFY_COMMANDS,
    value: (f) => f.z.string(),
  },
  SLACK_WEBHOOK_URL: {
    flag: 'slack-webhook-url',
    group: 'SLACK',
    summary: 'Alias: a Slack incoming-webhook URL, same as NOTIFY_URLS=slack+https://….',
    example: '<secret>',
    secret: true,
    commands: NOTIFY_COMMANDS,
    value: (f) => f.httpUrl,
  },
  SLACK_CHANNEL: {
    flag: 'slack-channel',
    group: 'SLACK',
    summary: 'Slack channel of SLACK_TOKEN/SLACK_WEBHOOK_URL.',
    example: 'sysadmin',
    default: 'sysadmin',
    commands: NOTIFY_COMMANDS,
    value: (f) => f.z.string(),
  },
  SLACK_MESSAGE_SUFFIX: {
    flag: 'slack-message-suffix',
    group: 'SLACK',
    summary: 'Appended to every message of SLACK_TOKEN/SLACK_WEBHOOK_URL, e.g. the environment name.',
    example: '(production)',
    commands: NOTIFY_COMMANDS,
    value: (f) => f.z.string(),
  },
  SLACK_API_URL: {
    flag: 'slack-api-url',
    group: 'SLACK',
    summary: "Slack's Web API base URL (tests, proxies).",
    example: 'https://slack.com/api',
    default: 'https://slack.com/api',
    commands: NOTIFY_COMMANDS,
    value: (f) => f.httpUrl,
  },
} as const satisfies Record<string, SettingDeclaration>

export type SettingName = keyof typeof SETTINGS

export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[]

const declarations: Record<SettingName, SettingDeclaration> = SETTINGS

export function declaration(name: SettingName): SettingDeclaration {
  return declarations[name]
}

/** The setting as help, resolution and docs see it (no schema, no command list). */
export function setting(name: SettingName): SettingSpec {
  const {flag, char, summary, example, secret, default: fallback, defaultText, required, docs} = declarations[name]
  return {env: name, flag, char, summary, example, secret, default: fallback, defaultText, required, docs}
}

/** Whether `command` takes the setting as a flag ('*': the base flags every command has). */
export function takesSetting(name: SettingName, command: CommandId | typeof EVERY_COMMAND): boolean {
  const {commands} = declarations[name]
  return commands === EVERY_COMMAND ? command === EVERY_COMMAND : command !== EVERY_COMMAND && commands.includes(command)
}

/** The settings a command takes, in declaration order. */
export function settingsOf(command: CommandId | typeof EVERY_COMMAND): SettingName[] {
  return SETTING_NAMES.filter((name) => takesSetting(name, command))
}

/**
 * The oclif flags of the settings `command` declares (`'*'`: the base flags of every command), in
 * declaration order, each bound to its variable. A command writes `static flags = {...settingFlagsFor('prune'), …}`.
 */
export function settingFlagsFor(command: CommandId | typeof EVERY_COMMAND) {
  return Object.fromEntries(
    settingsOf(command).map((name) => {
      const {summaryFor, group} = declarations[name]
      const own = command === EVERY_COMMAND ? undefined : summaryFor?.[command]
      return [declarations[name].flag, specToFlag({...setting(name), summary: own ?? declarations[name].summary}, group)]
    }),
  )
}

/** The default as shown to people: the declared value, or the words for a computed one; undefined when none. */
export function defaultLabel(spec: SettingSpec): string | undefined {
  return spec.default ?? spec.defaultText
}

/** The one-line help of a setting: its summary, where a secret may come from, and its default. */
export function helpSummary(spec: SettingSpec): string {
  const file = spec.secret ? ` Or ${fileVariable(spec.env)}: a file holding it.` : ''
  const fallback = defaultLabel(spec)
  return `${spec.summary}${file}${fallback === undefined ? '' : ` [default: ${fallback}]`}`
}

export function specToFlag(spec: SettingSpec, helpGroup?: string) {
  // Required here, not at the top: the config module imports this catalog, and the WAL fast path
  // (src/wal/fast-cli.ts) validates config without loading oclif.
  const {Flags} = require('@oclif/core') as typeof import('@oclif/core')
  return Flags.string({
    env: spec.env,
    summary: helpSummary(spec),
    helpGroup,
    helpValue: spec.secret ? '<secret>' : spec.example,
    ...(spec.char ? {char: spec.char} : {}),
  })
}

/**
 * Parsed flags back to a record keyed by variable name, the shape config validation reads: the
 * one place every command (and serve) resolves its settings. oclif already folded each variable
 * into its flag, and an empty variable counts as unset. A secret setting X may instead come from
 * the file X_FILE names (see readSecretFiles); both, or an unreadable file, is a ConfigError.
 * Every secret value found is registered for redaction (src/secrets.ts).
 */
export function valuesByVariable(
  specs: SettingSpec[],
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, string | undefined> {
  const {values, issues} = resolveSettings(specs, flags, env)
  if (issues.length > 0) throw new ConfigError(issues)
  return values
}

/** valuesByVariable, returning the X_FILE problems instead of throwing (to report them with the rest). */
export function resolveSettings(
  specs: SettingSpec[],
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): {values: Record<string, string | undefined>; issues: ConfigIssue[]} {
  const values: Record<string, string | undefined> = {}
  for (const spec of specs) {
    const value = flags[spec.flag]
    values[spec.env] = typeof value === 'string' && value !== '' ? value : undefined
  }

  const fromFiles = readSecretFiles(specs, values, env)
  Object.assign(values, fromFiles.values)
  // Also a secret this command does not read (SLACK_TOKEN during a backup): it is in the process
  // environment, so it must not show up in anything the command prints either.
  for (const spec of specs.filter((candidate) => candidate.secret)) {
    registerSecret(values[spec.env])
    registerSecret(env[spec.env])
  }

  return {values, issues: fromFiles.issues}
}
