import type {SettingName} from '../../src/settings'

/**
 * Bad values for every setting dbb reads (issue 8, "Config"), shared by the unit and the e2e
 * tests of this folder. Keyed by variable; a test fails when a setting is added to the catalog
 * (src/settings.ts) or to a backend's settings without an entry here, so new settings get covered.
 *
 *  - `malformed`: values of the wrong shape; `outOfRange`: the right shape, outside the limits;
 *  - `freeText`: why no value is invalid at config time (a host name, a password …);
 *  - `with`: other variables a value is only checked together with (TZ with BACKUP_SCHEDULE);
 *  - `names`: the variable the message names, when it is another one (a key without its secret);
 *  - `required`: an empty value is "is required"; otherwise empty counts as unset (the default).
 */
export interface SettingCase {
  malformed?: string[]
  outOfRange?: string[]
  freeText?: string
  with?: Record<string, string>
  names?: string
  required?: boolean
}

export const CORE_CASES: Record<SettingName, SettingCase> = {
  DB_HOST: {required: true, freeText: 'any host name or address; a wrong one fails at connect time, naming it (exit 1)'},
  DB_PORT: {malformed: ['abc', '54 32', '5432.0'], outOfRange: ['0', '65536', '-1']},
  DB_NAME: {required: true, outOfRange: ['x'.repeat(64)]},
  DB_USER: {freeText: 'any role name; a wrong one fails at connect time (exit 1)'},
  DB_PASSWORD: {freeText: 'a secret; a wrong one fails at connect time (exit 1), never echoed'},
  BACKUP_NAME_PREFIX: {malformed: ['../x', 'a/b', 'a b', '-x'], outOfRange: ['x'.repeat(65)]},
  RETENTION_DAYS: {malformed: ['seven', '1.5', '-1'], outOfRange: ['36501']},
  BACKUPS_TO_RETAIN: {malformed: ['many', '2.5'], outOfRange: ['0', '1000001']},
  ORPHAN_GRACE: {malformed: ['soon', '30', '24 hours please'], outOfRange: ['0s', '-1h']},
  // Tiered retention (issue 20).
  BACKUP_KEEP_DAYS: {malformed: ['week', '1.5', '-1'], outOfRange: ['36501']},
  BACKUP_KEEP_WEEKS: {malformed: ['four', '2.5'], outOfRange: ['5201']},
  BACKUP_KEEP_MONTHS: {malformed: ['six', '0.5'], outOfRange: ['1201']},
  DB_NAMES: {malformed: ['app,,billing', ',app', 'app,all', 'app,app', 'x'.repeat(64)]},
  BACKUP_GLOBALS: {malformed: ['maybe', 'roles']},
  GLOBALS_NO_ROLE_PASSWORDS: {malformed: ['maybe', 'nopasswords']},
  // Case does not matter (STORAGE_BACKEND=S3 is s3); failure-events.e2e.test.ts covers that.
  STORAGE_BACKEND: {malformed: ['s3!', '../local', 'lo cal']},
  LOG_FORMAT: {malformed: ['xml', 'JSON ']},
  LOG_LEVEL: {malformed: ['loud', 'verbose']},
  API_TOKEN: {required: true, outOfRange: ['short-token', 'x'.repeat(15)]},
  HTTP_PORT: {malformed: ['http', '80a'], outOfRange: ['65536', '-1']},
  HTTP_HOST: {freeText: 'an address to listen on; a wrong one fails at listen time (exit 1)'},
  SHUTDOWN_GRACE: {malformed: ['later', '30'], outOfRange: ['0s', '-5s']},
  BACKUP_INTERVAL: {malformed: ['daily', '12'], outOfRange: ['0s', '-1h', '1ms', '59s']},
  BACKUP_SCHEDULE: {malformed: ['every day', '* * *'], outOfRange: ['61 * * * *', '0 25 * * *', '* * * * * *', '*/10 * * * * *']},
  TZ: {malformed: ['Mars/Olympus_Mons', 'UTC+25'], with: {BACKUP_SCHEDULE: '0 3 * * *', BASE_BACKUP_SCHEDULE: '0 2 * * 0', DRILL_SCHEDULE: '0 5 * * 0'}},
  BASE_BACKUP_WAL_METHOD: {malformed: ['stream', 'FETCH!']},
  COMPRESSION: {malformed: ['lz4', 'gzip,zstd']},
  COMPRESSION_LEVEL: {malformed: ['max', '1.5'], outOfRange: ['0', '10', '20']},
  COMPRESSION_THREADS: {malformed: ['all', '2.5'], outOfRange: ['0', '257']},
  ENCRYPTION_RECIPIENTS: {malformed: ['age1notakey', 'ssh-ed25519 notbase64', 'AGE-SECRET-KEY-1QQQQ', ',,']},
  AGE_IDENTITY_FILE: {freeText: 'a path; a missing, unreadable or wrong identity fails before a restore touches anything, naming it (exit 2)'},
  BACKUP_NO_OWNER: {malformed: ['maybe', 'owners']},
  BACKUP_FORMAT: {malformed: ['directory', 'tar', 'Custom ', 'sql']},
  // restore drills (issue 19)
  BACKUP_RECORD_CHECKSUMS: {malformed: ['maybe', 'sha256']},
  DRILL_DB_HOST: {freeText: 'any host name or address; a wrong one fails when a drill connects, naming it (exit 1)'},
  DRILL_DB_PORT: {malformed: ['abc', '54 32'], outOfRange: ['0', '65536']},
  DRILL_DB_USER: {freeText: 'any role name; a wrong one fails when a drill connects (exit 1)'},
  DRILL_DB_PASSWORD: {freeText: 'a secret; a wrong one fails when a drill connects (exit 1), never echoed'},
  DRILL_INTERVAL: {malformed: ['weekly', '7'], outOfRange: ['0s', '-1h', '59s']},
  DRILL_SCHEDULE: {malformed: ['sundays', '0 5 *'], outOfRange: ['0 25 * * *', '* * * * * *']},
  DRILL_MAX_AGE: {malformed: ['old', '8'], outOfRange: ['0s', '-1d']},
  DRILL_OS_USER: {malformed: ['two words', 'a;b']},
  DRILL_TYPE: {malformed: ['physical', 'both']},
  BASE_BACKUP_CHECKPOINT: {malformed: ['slow', 'immediate']},
  BASE_BACKUP_INTERVAL: {malformed: ['weekly', '7'], outOfRange: ['0s', '-7d', '1ms']},
  BASE_BACKUP_SCHEDULE: {malformed: ['sundays', '0 2 *'], outOfRange: ['0 25 * * *', '61 2 * * 0', '* * * * * *']},
  CHECK_INTERVAL: {malformed: ['often', '15'], outOfRange: ['0s', '-15m']},
  WAL_STREAMING: {malformed: ['maybe', 'ja']},
  WAL_STREAMING_SLOT: {malformed: ['Bad-Slot!', 'slot name'], outOfRange: ['s'.repeat(64)]},
  WAL_STREAMING_DIR: {freeText: 'a directory path; a missing or unwritable one fails when streaming starts (exit 1)'},
  WAL_SPOOL_DIR: {freeText: 'a directory path; created on first use, an unwritable one fails the push (exit 1, PostgreSQL retries)'},
  WAL_READ_AHEAD_DIR: {freeText: "a directory path; one serve cannot read ahead (missing, not pg_wal, another user's) is logged and looked at again, while pushes spool (nothing lost)"},
  WAL_SPOOL_MAX_SEGMENTS: {malformed: ['many', '1.5'], outOfRange: ['0', '1000001']},
  WAL_PREFETCH: {malformed: ['lots', '1.5'], outOfRange: ['-1', '257']},
  WAL_ASYNC_PARALLEL: {malformed: ['four', '2.5'], outOfRange: ['0', '65']},
  BASE_BACKUP_INTERVAL_MINUTES: {malformed: ['ten', '1.5'], outOfRange: ['0', '5256001']},
  CHECKPOINT_TIMEOUT_SECONDS: {malformed: ['x', '1e3'], outOfRange: ['0', '31536001']},
  CHECK_BASE_BACKUP: {malformed: ['maybe', 'sometimes']},
  CHECK_WAL: {malformed: ['maybe', 'sometimes']},
  CHECK_LOGICAL_BACKUP: {malformed: ['maybe', 'sometimes']},
  NOTIFY_URLS: {
    malformed: ['not a url', 'foo://x', 'slack://@alerts', 'smtp://mail.example.com', 'healthchecks+https://hc-ping.com/', 'https://hooks.example.com/x'],
    outOfRange: ['smtp://mail.example.com/?to=ops@example.com&starttls=sometimes', 'slack://xoxb-1@alerts?api=ftp://x'],
  },
  NOTIFY_WEBHOOK_SECRET: {outOfRange: ['short', 'x'.repeat(15)]},
  NOTIFY_ON_SUCCESS: {malformed: ['maybe', 'always']},
  NOTIFY_TIMEOUT: {malformed: ['soon', '10'], outOfRange: ['0s', '-1s', '6m']},
  NOTIFY_REMINDER_INTERVAL: {malformed: ['daily', '6'], outOfRange: ['0s', '30s']},
  SLACK_TOKEN: {freeText: 'a secret; Slack refuses a wrong one when an alert is sent, and dbb logs why'},
  SLACK_WEBHOOK_URL: {malformed: ['not a url', 'hooks.slack.com/services/x'], outOfRange: ['ftp://hooks.slack.com/x', 'file:///etc/passwd']},
  SLACK_CHANNEL: {freeText: 'a channel name'},
  SLACK_MESSAGE_SUFFIX: {freeText: 'any text appended to alerts'},
  SLACK_API_URL: {malformed: ['slack', 'slack.com/api'], outOfRange: ['ftp://slack.com/api', 'file:///etc/passwd']},
}

export const STORAGE_CASES: Record<string, SettingCase> = {
  BACKUP_LOCAL_DIR: {required: true, freeText: 'a path; a missing or unwritable directory fails the health check naming it (exit 1)'},
  S3_BUCKET: {required: true, malformed: ['a/b', 'my bucket', '-'], outOfRange: ['b'.repeat(256)]},
  S3_PREFIX: {malformed: ['../x', 'a//b', 'a b']},
  S3_ENDPOINT: {malformed: ['minio:9000', 'not a url', 'ftp://minio:9000'], outOfRange: ['http://user:password@minio:9000']},
  S3_FORCE_PATH_STYLE: {malformed: ['maybe', 'path']},
  AWS_DEFAULT_REGION: {malformed: ['eu central 1', 'eu/central']},
  AWS_ACCESS_KEY_ID: {malformed: ['AKIAIOSFODNN7EXAMPLE'], names: 'AWS_SECRET_ACCESS_KEY'},
  AWS_SECRET_ACCESS_KEY: {malformed: ['wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'], names: 'AWS_ACCESS_KEY_ID'},
  AWS_SESSION_TOKEN: {malformed: ['FwoGZXIvYXdzEXAMPLE'], names: 'AWS_ACCESS_KEY_ID'},
  S3_STORAGE_CLASS: {malformed: ['cold storage', 'standard']},
  S3_SSE: {malformed: ['rot13', 'kms']},
  S3_SSE_KMS_KEY_ID: {malformed: ['alias/backups']},
  S3_PART_SIZE: {malformed: ['big', '16 parsecs'], outOfRange: ['1MiB', '6GiB']},
  S3_UPLOAD_CONCURRENCY: {malformed: ['many', '2.5'], outOfRange: ['0', '65']},
  S3_CONDITIONAL_WRITES: {malformed: ['maybe', 'sometimes']},
  S3_CHECKSUMS: {malformed: ['always', 'crc32']},
  S3_CONNECT_TIMEOUT: {malformed: ['soon', 'ten seconds'], outOfRange: ['1ms', '11m']},
  S3_REQUEST_TIMEOUT: {malformed: ['soon', 'ten seconds'], outOfRange: ['1ms', '2h']},
}

/** Every bad value of a case, labelled. */
export function badValues(settingCase: SettingCase): [kind: string, value: string][] {
  return [
    ...(settingCase.malformed ?? []).map((value): [string, string] => ['malformed', value]),
    ...(settingCase.outOfRange ?? []).map((value): [string, string] => ['out of range', value]),
  ]
}
