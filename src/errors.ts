import {redactSecrets} from './secrets'

/**
 * The errors dbb reports to users. Each carries the process exit code it maps to, so the one
 * `catch()` in the base command can turn any of them into a clean message and a defined exit:
 * 0 success, 1 the operation failed, 2 bad usage or configuration.
 */
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
/**
 * `backup run` with DB_NAMES: some of the run's backups (a database, the globals) failed and the
 * others are stored and listed. 1 when none could be stored. (Issue 20.)
 */
export const EXIT_PARTIAL_FAILURE = 3

/**
 * `dbb wal fetch` is PostgreSQL's restore_command, which reads exit codes 1–125 as "this file is
 * not in the archive" (recovery ends there and the server promotes, without every later
 * transaction) and a signal or an exit above 125 as fatal (recovery aborts; the server stays down
 * with the error in its log). So wal fetch exits EXIT_WAL_NOT_IN_ARCHIVE only when storage
 * positively answered "no such object", and EXIT_WAL_FETCH_FATAL for everything else: a read
 * error, a damaged object, storage unreachable, bad configuration, a bug. 200 because the shell
 * already uses 126 (not executable), 127 (not found) and 128+n (killed by signal n, n ≤ 64).
 * bin/run.js repeats 200 for the one case where it cannot load this file; a unit test keeps them equal.
 */
export const EXIT_WAL_NOT_IN_ARCHIVE = 1
export const EXIT_WAL_FETCH_FATAL = 200

/**
 * `dbb drill`: the backup was restored (or tried to be) and is not what it must be — it did not
 * import, or the restored database differs from what the backup recorded. Distinct from 1 (the
 * drill could not run: drill server or storage unreachable, interrupted) so a scheduler tells a
 * bad backup from a bad day.
 */
export const EXIT_DRILL_FAILED = 3

export class DbbError extends Error {
  readonly exitCode: number = EXIT_FAILURE
  /** A stable machine-readable identifier, used in `--json` error output and REST bodies. */
  readonly code: string = 'FAILED'
  constructor(message: string, options?: {cause?: unknown}) {
    super(message, options)
    this.name = new.target.name
  }
}

export interface ConfigIssue {
  /** The environment variable (or flag) at fault, e.g. `DB_PORT`. */
  variable: string
  message: string
  /** An example of a valid value, shown to the user. */
  example?: string
}

/** Missing or invalid configuration: one line per problem, exit code 2. */
export class ConfigError extends DbbError {
  override readonly exitCode = EXIT_USAGE
  override readonly code = 'CONFIG_INVALID'
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map((issue) => formatIssue(issue)).join('\n'))
  }
}

export function formatIssue({variable, message, example}: ConfigIssue): string {
  return `${variable}: ${message}${example === undefined ? '' : ` (example: ${variable}=${example})`}`
}

/**
 * An installed storage plugin that does not keep the storage contract (create() returned a backend
 * without list(), …): the installation must change, as with bad configuration, so exit code 2.
 */
export class StoragePluginError extends DbbError {
  override readonly exitCode = EXIT_USAGE
  override readonly code = 'STORAGE_PLUGIN_INVALID'
}

/** The command was called wrongly (bad argument), exit code 2. */
export class UsageError extends DbbError {
  override readonly exitCode = EXIT_USAGE
  override readonly code = 'USAGE'
}

export class NotFoundError extends DbbError {
  override readonly code = 'NOT_FOUND'
}

/**
 * The storage backend failed (unreachable, refused, I/O error) for a reason other than "no such
 * object". The message is the backend's own, which the storage contract keeps free of secrets; the
 * REST API answers it as 503 (the service is fine, its storage is not), never as a masked 500.
 */
export class StorageUnavailableError extends DbbError {
  override readonly code = 'STORAGE_UNAVAILABLE'
}

/** A backup, download or restore that failed; the message names the cause. */
export class OperationError extends DbbError {
  override readonly code = 'OPERATION_FAILED'
}

/**
 * A backup whose sidecar exists but could not be read (storage answered an error, not "no such
 * object"): it is neither absent nor usable, and a retry may succeed. HTTP 503.
 */
export class BackupUnreadableError extends DbbError {
  override readonly code = 'BACKUP_UNREADABLE'
  /** Its message (the backup id and the storage's secret-free cause) is meant for HTTP clients too. */
  readonly expose = true
}

/** A backup whose objects are present but wrong: invalid sidecar, dump missing or of another size. HTTP 500. */
export class BackupDamagedError extends DbbError {
  override readonly code = 'BACKUP_DAMAGED'
  readonly expose = true
}

export class AbortedError extends DbbError {
  override readonly code = 'ABORTED'
  constructor(message = 'Interrupted') {
    super(message)
  }
}

/**
 * Storage backends live in separate packages and must not import core at runtime, so they signal
 * errors by shape (see src/storage/contract.ts): `code: 'NOT_FOUND'`, or `name: 'StorageConfigError'`
 * with `issues`. These guards read that shape.
 */
export function isNotFound(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as {code?: unknown}).code === 'NOT_FOUND'
}

export function isAlreadyExists(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as {code?: unknown}).code === 'ALREADY_EXISTS'
}

export function asConfigError(error: unknown): ConfigError | undefined {
  if (error instanceof ConfigError) return error
  const candidate = error as {name?: unknown; issues?: unknown}
  if (candidate && candidate.name === 'StorageConfigError' && Array.isArray(candidate.issues)) {
    return new ConfigError(candidate.issues as ConfigIssue[])
  }

  return undefined
}

/**
 * An error's text for users, logs and REST answers, with every registered secret value replaced
 * (a storage plugin or driver may echo a token in its message; see src/secrets.ts).
 */
export function errorMessage(error: unknown): string {
  return redactSecrets(error instanceof Error ? error.message : String(error))
}
