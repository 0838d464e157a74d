import {ConfigError, ConfigIssue} from './errors'
import {fileVariable, readSecretFiles, registerSecret} from './secrets'

/**
 * Every setting dbb reads, in one catalog: the environment variable, the flag that mirrors it,
 * and an example of a valid value for error messages. Commands pick the settings they use with
 * `settingFlags(...)`, so each is declared statically (oclif's manifest and `--help` see it) and
 * bound to its variable with `env:`. Values stay strings here; src/config/ validates and types
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
  DB_NAME: {flag: 'db-name', summary: 'The database: the one backup run dumps, and the one restore replaces (unless --target-db).', example: 'app'},
  DB_USER: {flag: 'db-user', summary: 'PostgreSQL user (default postgres).', example: 'postgres'},
  DB_PASSWORD: {
    flag: 'db-password',
    summary: 'Password; else PGPASSWORD, else a pgpass file (PGPASSFILE, /run/secrets/pgpass, ~/.pgpass).',
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
  API_TOKEN: {
    flag: 'api-token',
    summary: 'Bearer token the REST API of dbb serve requires (at least 16 characters; openssl rand -hex 32).',
    example: '$(openssl rand -hex 32)',
    secret: true,
  },
  HTTP_PORT: {flag: 'http-port', summary: 'Port dbb serve listens on (default 8080; 0 picks a free port).', example: '8080'},
  HTTP_HOST: {flag: 'http-host', summary: 'Address dbb serve listens on (default 0.0.0.0).', example: '0.0.0.0'},
  SHUTDOWN_GRACE: {
    flag: 'shutdown-grace',
    summary: 'On SIGTERM, how long an in-flight backup may run before it is aborted (default 30s).',
    example: '30s',
  },
  BACKUP_INTERVAL: {
    flag: 'backup-interval',
    summary: 'Scheduled backups this long after the last successful one (default 24h, at least 1m; PT24H, P1D, 12h, 30m).',
    example: '24h',
  },
  BACKUP_SCHEDULE: {
    flag: 'backup-schedule',
    summary: 'Scheduled backups by cron expression instead of an interval, e.g. "0 3 * * *".',
    example: '"0 3 * * *"',
  },
  TZ: {flag: 'timezone', summary: 'IANA time zone of BACKUP_SCHEDULE (default: the system time zone).', example: 'Europe/Berlin'},
  BASE_BACKUP_WAL_METHOD: {
    flag: 'base-wal-method',
    summary: 'WAL in base backups: fetch (self-contained, default) or none (relies on the WAL archive).',
    example: 'fetch',
  },
  // --- COMPRESSION (issue 15): codec choice; COMPRESSION_LEVEL's range follows it ---
  COMPRESSION: {
    flag: 'compression',
    summary: 'Codec of new backups and WAL: gzip (default, .gz) or zstd (.zst; needs the zstd program). Existing backups of either codec stay readable.',
    example: 'zstd',
  },
  COMPRESSION_LEVEL: {
    flag: 'compression-level',
    summary: 'Level of the codec: gzip 1 fastest … 9 smallest, zstd 1 … 19 (default 1 for both; see README "Performance and compression settings").',
    example: '1',
  },
  COMPRESSION_THREADS: {
    flag: 'compression-threads',
    summary: 'Blocks compressed in parallel (default: the cores available, at most UV_THREADPOOL_SIZE - 1).',
    example: '2',
  },
  BACKUP_NO_OWNER: {
    flag: 'backup-no-owner',
    summary: 'Dump without owners and GRANT/REVOKE (pg_dump --no-owner --no-privileges), for managed services whose roles differ (default false).',
    example: 'true',
  },
  BASE_BACKUP_CHECKPOINT: {flag: 'base-checkpoint', summary: 'Checkpoint before a base backup: fast (default) or spread.', example: 'fast'},
  BASE_BACKUP_INTERVAL: {
    flag: 'base-backup-interval',
    summary: 'dbb serve: a base backup this long after the last one (e.g. 7d); off unless this or BASE_BACKUP_SCHEDULE is set.',
    example: '7d',
  },
  BASE_BACKUP_SCHEDULE: {flag: 'base-backup-schedule', summary: 'dbb serve: base backups by cron expression, e.g. "0 2 * * 0".', example: '"0 2 * * 0"'},
  CHECK_INTERVAL: {flag: 'check-interval', summary: 'dbb serve: run the dbb check this often and alert Slack on failure (off when unset).', example: '15m'},
  WAL_STREAMING: {flag: 'wal-streaming', summary: 'Stream WAL with pg_receivewal instead of archive_command (dbb serve; default false).', example: 'true'},
  WAL_STREAMING_SLOT: {flag: 'wal-streaming-slot', summary: 'Replication slot pg_receivewal uses (created if missing; default dbb).', example: 'dbb'},
  WAL_STREAMING_DIR: {
    flag: 'wal-streaming-dir',
    summary: 'Local spool directory for streamed WAL; keep it on a volume so restarts resume without gaps.',
    example: '/var/lib/dbb/wal-spool',
  },
  WAL_SPOOL_DIR: {
    flag: 'wal-spool-dir',
    summary: 'wal push --async: directory where segments wait (copied and fsynced) for the uploader; on durable, local storage.',
    example: '/var/lib/dbb/wal-async',
  },
  WAL_SPOOL_MAX_SEGMENTS: {
    flag: 'wal-spool-max-segments',
    summary: 'wal push --async: pushes fail (PostgreSQL retries) while this many files wait in the spool (default 64).',
    example: '64',
  },
  WAL_PREFETCH: {
    flag: 'wal-prefetch',
    summary: 'wal fetch: segments downloaded ahead into WAL_SPOOL_DIR/fetch-queue while recovery replays (default 8; 0 off; needs WAL_SPOOL_DIR).',
    example: '8',
  },
  WAL_ASYNC_PARALLEL: {flag: 'wal-async-parallel', summary: 'wal push --async: segments the uploader stores at once (default 4).', example: '4'},
  BASE_BACKUP_INTERVAL_MINUTES: {
    flag: 'base-backup-interval-minutes',
    summary: 'dbb check: the newest base backup may be this old, plus 5 minutes (default 10080).',
    example: '10080',
  },
  CHECKPOINT_TIMEOUT_SECONDS: {
    flag: 'checkpoint-timeout-seconds',
    summary: "dbb check: the newest archived WAL may be this old, plus 2 minutes (default 300; the server's archive_timeout/checkpoint_timeout).",
    example: '300',
  },
  CHECK_BASE_BACKUP: {
    flag: 'check-base-backup',
    summary: 'dbb check: check the base backup age; unset: only once a base backup or archived WAL exists (true forces, false turns off).',
    example: 'false',
  },
  CHECK_WAL: {
    flag: 'check-wal',
    summary: 'dbb check: check archived WAL (age and the chain from the newest base backup); unset: only once a base backup or WAL exists.',
    example: 'false',
  },
  CHECK_LOGICAL_BACKUP: {flag: 'check-logical-backup', summary: 'dbb check: check the logical backup age (default true).', example: 'false'},
  SLACK_TOKEN: {flag: 'slack-token', summary: 'Slack bot token (chat.postMessage) for failed checks.', example: '<secret>', secret: true},
  SLACK_WEBHOOK_URL: {flag: 'slack-webhook-url', summary: 'Slack incoming-webhook URL, instead of a token.', example: '<secret>', secret: true},
  SLACK_CHANNEL: {flag: 'slack-channel', summary: 'Slack channel for alerts (default sysadmin).', example: 'sysadmin'},
  SLACK_MESSAGE_SUFFIX: {flag: 'slack-message-suffix', summary: 'Appended to every Slack alert, e.g. the environment name.', example: '(production)'},
  SLACK_API_URL: {flag: 'slack-api-url', summary: "Slack's Web API base URL (default https://slack.com/api).", example: 'https://slack.com/api'},
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
  API_TOKEN: 'SERVER',
  HTTP_PORT: 'SERVER',
  HTTP_HOST: 'SERVER',
  SHUTDOWN_GRACE: 'SERVER',
  BACKUP_INTERVAL: 'SCHEDULE',
  BACKUP_SCHEDULE: 'SCHEDULE',
  TZ: 'SCHEDULE',
  COMPRESSION: 'COMPRESSION',
  COMPRESSION_LEVEL: 'COMPRESSION',
  COMPRESSION_THREADS: 'COMPRESSION',
  BACKUP_NO_OWNER: 'BACKUP',
  BASE_BACKUP_WAL_METHOD: 'BASE BACKUP',
  BASE_BACKUP_CHECKPOINT: 'BASE BACKUP',
  BASE_BACKUP_INTERVAL: 'BASE BACKUP',
  BASE_BACKUP_SCHEDULE: 'BASE BACKUP',
  CHECK_INTERVAL: 'CHECK',
  WAL_STREAMING: 'WAL',
  WAL_STREAMING_SLOT: 'WAL',
  WAL_STREAMING_DIR: 'WAL',
  WAL_SPOOL_DIR: 'WAL',
  WAL_SPOOL_MAX_SEGMENTS: 'WAL',
  WAL_ASYNC_PARALLEL: 'WAL',
  WAL_PREFETCH: 'WAL',
  BASE_BACKUP_INTERVAL_MINUTES: 'CHECK',
  CHECKPOINT_TIMEOUT_SECONDS: 'CHECK',
  CHECK_BASE_BACKUP: 'CHECK',
  CHECK_WAL: 'CHECK',
  CHECK_LOGICAL_BACKUP: 'CHECK',
  SLACK_TOKEN: 'SLACK',
  SLACK_WEBHOOK_URL: 'SLACK',
  SLACK_CHANNEL: 'SLACK',
  SLACK_MESSAGE_SUFFIX: 'SLACK',
  SLACK_API_URL: 'SLACK',
}

/** oclif string flags, bound to their environment variables, for the given settings. */
export function settingFlags(...names: SettingName[]) {
  return Object.fromEntries(names.map((name) => [catalog[name].flag, specToFlag(setting(name), GROUPS[name])]))
}

export function specToFlag(spec: SettingSpec, helpGroup?: string) {
  // Required here, not at the top: the config module imports this catalog, and the WAL fast path
  // (src/wal/fast-cli.ts) validates config without loading oclif.
  const {Flags} = require('@oclif/core') as typeof import('@oclif/core')
  const summary = spec.secret ? `${spec.summary} Or ${fileVariable(spec.env)}: a file holding it.` : spec.summary
  return Flags.string({env: spec.env, summary, helpGroup, helpValue: spec.secret ? '<secret>' : spec.example})
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

export const LOGGING_SETTINGS: SettingName[] = ['LOG_FORMAT', 'LOG_LEVEL']
export const DATABASE_SETTINGS: SettingName[] = ['DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD']
export const RETENTION_SETTINGS: SettingName[] = ['RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE']
