import type {Readable} from 'node:stream'

/**
 * THE storage contract of dbb. Every backend (local, s3, or a third-party plugin) implements
 * `StorageBackend` and ships as an oclif plugin whose `dbb:storage-provider` hook returns a
 * `StorageProvider`. This package has no runtime dependencies: a plugin depends on it, never on
 * dbb itself, so errors are signalled by shape (see "Errors"), not by class. The conformance kit
 * (`@dbb/storage-test-suite`) checks every rule written here, and only those.
 *
 * Keys: see `isSafeKey` — relative, `/`-separated names such as `backup_20261121T030000Z.sql.gz`
 * or `wal/000000010000000000000001.gz`. Core only passes keys made of `[A-Za-z0-9._-]` segments;
 * a backend still refuses every key `isSafeKey` refuses, because a key is never allowed to address
 * anything outside the backend's location.
 *
 * Errors (the `code` / `name` is what callers read; the message is for humans):
 *  - a missing key: an Error with `code: 'NOT_FOUND'` from `get` (`stat` resolves to undefined,
 *    `delete` succeeds) — see `notFound()`;
 *  - `put` with `overwrite: false` onto an existing key: `code: 'ALREADY_EXISTS'` — `alreadyExists()`;
 *  - a key `isSafeKey` refuses, given to `put`, `get`, `stat` or `delete`: the returned promise
 *    rejects with `code: 'INVALID_KEY'`, and storage is not touched — `assertSafeKey()`;
 *  - bad settings in `create`: an Error with `name: 'StorageConfigError'` and
 *    `issues: [{variable, message, example}]`, reported to the user line by line, exit code 2 —
 *    `storageConfigError()`;
 *  - anything else: an Error whose message names the cause in words an operator can act on,
 *    without secrets. A read error is never reported as NOT_FOUND: only a positive "no such
 *    object" from the store is.
 *
 * Time (`StorageBackend.timeBoundMs`): every wait on a backend ends within its bound — a call
 * settles, a `list` page arrives, a `get` stream delivers its next bytes while its reader waits,
 * and a `put` takes the next bytes of its body (or settles once the body ended). A transfer is not
 * cut while bytes flow. A networked backend enforces this itself (connect and idle timeouts) and
 * fails with a message naming the endpoint; dbb also enforces it around every call (with a little
 * grace), so a backend that hangs fails the command instead of stalling it.
 */

/**
 * The version of this contract. A provider states the version it was built against
 * (`contractVersion`, set by `defineStorageProvider`); dbb accepts providers from
 * `MIN_SUPPORTED_CONTRACT_VERSION` to its own `CONTRACT_VERSION` and refuses others, naming the
 * plugin and both versions. A new version that only adds optional members keeps older providers
 * working; one that changes or removes a member raises `MIN_SUPPORTED_CONTRACT_VERSION`.
 *
 * 1: the contract before this package (providers without `contractVersion` are read as 1).
 * 2: this package: `timeBoundMs`, `sweep`, `list(prefix, {startAfter})`, settings with `default` / `required`.
 */
export const CONTRACT_VERSION = 2
export const MIN_SUPPORTED_CONTRACT_VERSION = 1

/** The oclif hook event a storage plugin declares in its package.json (`oclif.hooks`). */
export const STORAGE_PROVIDER_HOOK = 'dbb:storage-provider'

/** The bound dbb enforces for a backend that declares no `timeBoundMs`: 5 minutes. */
export const DEFAULT_TIME_BOUND_MS = 5 * 60_000

/** A provider's `name` (the value of STORAGE_BACKEND): lowercase letters, digits and `-`, starting with a letter or digit, at most 40. */
export const PROVIDER_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,39}$/
/** A setting's `env`: upper-case letters, digits and `_`, starting with a letter. */
export const SETTING_ENV_PATTERN = /^[A-Z][A-Z0-9_]*$/
/** A setting's `flag` (without `--`): lowercase letters, digits and `-`, starting with a letter. */
export const SETTING_FLAG_PATTERN = /^[a-z][a-z0-9-]*$/

export interface ObjectInfo {
  key: string
  sizeBytes: number
  lastModified: Date
}

export interface PutOptions {
  /** Aborting stops the write: the promise rejects, and nothing remains under `key`. */
  signal?: AbortSignal
  /** false: fail with ALREADY_EXISTS instead of replacing an existing object (best effort where the store cannot do it atomically). */
  overwrite?: boolean
  contentType?: string
}

export interface GetOptions {
  /** Byte range, inclusive at both ends, as in HTTP Range. `start` alone: to the end. A `start` at the object's size gives an empty stream. */
  start?: number
  end?: number
  signal?: AbortSignal
}

/** Data a backend staged for a write that never finished (see `StorageBackend.sweep`). */
export interface StagedLeftover {
  /** The key the unfinished write was for (a backend may append its own detail, e.g. an upload id). */
  key: string
  /** When the write started; the sweep only touches leftovers started before `olderThan`. */
  startedAt: Date
  /** Bytes it holds, when the backend knows (0 when not). */
  sizeBytes: number
  /** What it is, for humans: `incomplete multipart upload`, `temp file`. */
  kind: string
}

export interface SweepOptions {
  /** true: report what would be removed, remove nothing. */
  dryRun?: boolean
  /**
   * When given, only leftovers whose key it accepts are removed and returned; the others are left
   * alone whatever their age. The cleanup at the start of a run (dbb's src/backup/leftovers.ts)
   * passes the keys of writers it knows are dead, with `olderThan` = now: a backend that implements
   * `sweep` MUST honour it, or it would abort a live writer's upload.
   */
  only?: (key: string) => boolean
}

export interface ListOptions {
  /**
   * Only keys that sort after this one (byte order of the full key), as S3's StartAfter: a caller
   * that needs the tail of a large prefix (the newest WAL) lists that tail, not the whole prefix.
   * A backend honours it (the kit checks it); one that cannot do it cheaply filters while listing.
   */
  startAfter?: string
  /**
   * Only keys that sort before this one (byte order of the full key): with startAfter, a range.
   * A backend whose listing is ordered (S3) stops paging there, so a range inside a large prefix
   * costs what the range holds. Optional for backends, like startAfter: callers filter as well.
   */
  endBefore?: string
}

export interface StorageBackend {
  /** The provider name, e.g. `local`. */
  readonly name: string
  /** Where data goes, for humans and logs, never with credentials: `/var/backups`, `s3://bucket/prefix`. */
  readonly location: string
  /**
   * The longest any single wait on this backend lasts, in milliseconds (see "Time" above); dbb
   * fails an operation that exceeds it. Derive it from the backend's own timeouts (e.g. attempts ×
   * (connect + idle timeout) + backoff); a backend that buffers before sending (multipart parts)
   * includes the time to send one buffer at the slowest rate it supports. Absent:
   * `DEFAULT_TIME_BOUND_MS`.
   */
  readonly timeBoundMs?: number
  /**
   * Stores the whole stream under `key`. Resolves with the number of bytes stored only once the
   * object is durably stored under its final name; a reader never sees a partial object under
   * `key` (nor lists it). If the stream errors or the signal aborts, nothing is left under `key`
   * and the promise rejects (with the stream's own error when the stream failed). Objects of any
   * size, including 0 bytes, are stored byte for byte.
   */
  put(key: string, body: Readable, options?: PutOptions): Promise<{sizeBytes: number}>
  /** A stream of the object's bytes (or of the requested range). Rejects with NOT_FOUND for a missing key — before returning a stream. */
  get(key: string, options?: GetOptions): Promise<Readable>
  /** Metadata of one object (`lastModified` within seconds of the write), or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>
  /**
   * Every object whose key starts with `prefix` (`''` for all) — keys of any depth under it, each
   * once, with its size — in no particular order; pages lazily (a listing of 100,000 keys is not
   * held in memory). Staged data (temp files, incomplete uploads) is not listed.
   */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>
  /** Deletes `key`; deleting a missing key succeeds. */
  delete(key: string): Promise<void>
  /** Resolves when the location is reachable and writable; rejects with a message naming what is wrong. */
  health(): Promise<void>
  /** Releases connections and sockets. Optional. */
  close?(): Promise<void>
  /**
   * Removes what this backend staged for writes that never finished and that no key shows: an
   * S3 store's incomplete multipart uploads (billed, invisible to `list`), a file system's temp
   * files. Optional: a backend that stages nothing leaves it out. Called by `dbb prune` with
   * `olderThan` = now − ORPHAN_GRACE: a leftover started at or after `olderThan` may belong to a
   * writer that is still running and MUST NOT be touched. Only leftovers under this backend's own
   * location are considered. Returns what was removed (with `dryRun`, what would be, removing
   * nothing); a store that cannot list its staged data resolves to `[]`. Errors reject as for any
   * other operation.
   */
  sweep?(olderThan: Date, options?: SweepOptions): Promise<StagedLeftover[]>
}

/** The methods every backend has; `close` and `sweep` are optional. */
export const REQUIRED_BACKEND_METHODS = ['put', 'get', 'stat', 'list', 'delete', 'health'] as const

/** One setting a backend reads: an environment variable, mirrored by a flag on the commands that use storage. */
export interface StorageSetting {
  /** The environment variable (`SETTING_ENV_PATTERN`); must not be one of dbb's own settings (DB_PASSWORD, STORAGE_BACKEND, …). */
  env: string
  /** The flag, without `--` (`SETTING_FLAG_PATTERN`). */
  flag: string
  /** One line: what it is. Defaults and requirements go in `default` / `required`, not here. */
  summary: string
  /** A valid value, shown in help and in error messages. */
  example: string
  /** The value used when the setting is unset, as the user would write it (shown in help and `dbb backends`). */
  default?: string
  /** A default that depends on something else, in words (`true when S3_ENDPOINT is set, else false`). */
  defaultText?: string
  /** true: `create` fails with a StorageConfigError when it is unset. */
  required?: boolean
  /** A secret (password, key): redacted in logs, errors and `--json`; may be given as `<env>_FILE`. */
  secret?: boolean
}

export interface ProviderContext {
  /** A pino-compatible logger, already redacting secrets. */
  logger: {
    debug(object: object, message?: string): void
    info(object: object, message?: string): void
    warn(object: object, message?: string): void
  }
}

export interface StorageProvider {
  /** The value of STORAGE_BACKEND that selects this backend (`PROVIDER_NAME_PATTERN`). */
  name: string
  /** One line for `dbb backends`. */
  summary: string
  /** The contract version the provider was built against; absent: 1. `defineStorageProvider` sets it. */
  contractVersion?: number
  settings: StorageSetting[]
  /**
   * Validates settings (keyed by env variable, blank ones absent) and returns a ready backend
   * that has every method of `REQUIRED_BACKEND_METHODS`. Heavy SDKs load here, lazily: the hook
   * runs on every dbb command.
   */
  create(settings: Readonly<Record<string, string | undefined>>, context: ProviderContext): Promise<StorageBackend>
}

/** Returns the provider with `contractVersion` set to the version of this package: what a plugin's hook returns. */
export function defineStorageProvider(provider: Omit<StorageProvider, 'contractVersion'>): StorageProvider {
  return {...provider, contractVersion: CONTRACT_VERSION}
}

export interface SettingIssue {
  variable: string
  message: string
  example?: string
}

export type StorageConfigError = Error & {name: 'StorageConfigError'; issues: SettingIssue[]}

/** The error `create` throws for bad settings: every problem at once, one issue per variable. */
export function storageConfigError(issues: SettingIssue[]): StorageConfigError {
  const error = new Error(issues.map((issue) => `${issue.variable}: ${issue.message}`).join('\n')) as StorageConfigError
  error.name = 'StorageConfigError'
  error.issues = issues
  return error
}

/** The error `get` rejects with for a key that does not exist. */
export function notFound(key: string): Error & {code: 'NOT_FOUND'} {
  return Object.assign(new Error(`${key} not found`), {code: 'NOT_FOUND' as const})
}

/** The error `put` with `overwrite: false` rejects with when the key exists. */
export function alreadyExists(key: string): Error & {code: 'ALREADY_EXISTS'} {
  return Object.assign(new Error(`${key} already exists`), {code: 'ALREADY_EXISTS' as const})
}

/**
 * Whether a key may be used. A key is safe when it is 1 to 1024 characters long, contains no NUL
 * and no backslash, does not start with `/`, and none of its `/`-separated segments is empty, `.`
 * or `..` (so `a//b`, `a/./b`, `../x`, `/x` and `a/` are refused).
 */
export function isSafeKey(key: string): boolean {
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024 || key.includes('\0') || key.includes('\\')) return false
  return key.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..')
}

/** Throws `code: 'INVALID_KEY'` for a key `isSafeKey` refuses; call it first in every method that takes a key. */
export function assertSafeKey(key: string): void {
  if (!isSafeKey(key)) throw Object.assign(new Error(`invalid storage key ${JSON.stringify(key)}`), {code: 'INVALID_KEY'})
}

/**
 * What is wrong with a value a plugin's hook returned, one sentence per problem naming the field
 * (empty: a valid provider). dbb refuses a provider with problems and reports them; a plugin's
 * own tests can assert `providerProblems(provider)` is empty (the kit does).
 */
export function providerProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [`the hook returned ${value === null ? 'null' : typeof value}, not a storage provider object`]
  const provider = value as Partial<Record<keyof StorageProvider, unknown>>
  const problems: string[] = []
  if (typeof provider.name !== 'string') problems.push('name is missing (a string such as "webdav")')
  else if (!PROVIDER_NAME_PATTERN.test(provider.name)) {
    problems.push(`name ${JSON.stringify(provider.name)} is invalid: lowercase letters, digits and "-", starting with a letter or digit (such as "${provider.name.toLowerCase().replaceAll(/[^a-z0-9-]/g, '-').replace(/^-+/, '') || 'webdav'}")`)
  }

  if (typeof provider.summary !== 'string' || provider.summary.trim() === '') problems.push('summary is missing (one line for `dbb backends`)')
  if (provider.contractVersion !== undefined && !Number.isInteger(provider.contractVersion)) problems.push('contractVersion must be a whole number (use CONTRACT_VERSION)')
  if (typeof provider.create !== 'function') problems.push('create is not a function')
  if (!Array.isArray(provider.settings)) {
    problems.push('settings is not an array (use [] for none)')
  } else {
    for (const [index, entry] of provider.settings.entries()) {
      const setting = (entry ?? {}) as Partial<Record<keyof StorageSetting, unknown>>
      const which = typeof setting.env === 'string' ? `setting ${setting.env}` : `settings[${index}]`
      if (typeof setting.env !== 'string' || !SETTING_ENV_PATTERN.test(setting.env)) {
        problems.push(`${which}: env ${JSON.stringify(setting.env)} is invalid: upper-case letters, digits and "_", starting with a letter`)
      }

      if (typeof setting.flag !== 'string' || !SETTING_FLAG_PATTERN.test(setting.flag)) {
        problems.push(`${which}: flag ${JSON.stringify(setting.flag)} is invalid: lowercase letters, digits and "-", starting with a letter, without "--"`)
      }

      for (const field of ['summary', 'example'] as const) {
        if (typeof setting[field] !== 'string') problems.push(`${which}: ${field} is missing (a string)`)
      }

      if (setting.default !== undefined && typeof setting.default !== 'string') problems.push(`${which}: default must be a string`)
      for (const field of ['required', 'secret'] as const) {
        if (setting[field] !== undefined && typeof setting[field] !== 'boolean') problems.push(`${which}: ${field} must be true or false`)
      }
    }

    const flags = provider.settings.map((setting) => (setting as StorageSetting | undefined)?.flag)
    for (const flag of new Set(flags.filter((flag, index) => flag !== undefined && flags.indexOf(flag) !== index))) {
      problems.push(`flag --${flag} is declared twice`)
    }
  }

  return problems
}

/** What is wrong with the object `create` resolved to: missing methods or fields, by name (empty: the shape is right). */
export function backendProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [`create() resolved to ${value === null ? 'null' : typeof value}, not a backend object`]
  const backend = value as Record<string, unknown>
  const problems: string[] = []
  for (const method of REQUIRED_BACKEND_METHODS) {
    if (typeof backend[method] !== 'function') problems.push(`${method}() is missing`)
  }

  for (const method of ['close', 'sweep']) {
    if (backend[method] !== undefined && typeof backend[method] !== 'function') problems.push(`${method} is not a function`)
  }

  if (typeof backend.name !== 'string') problems.push('name is missing')
  if (typeof backend.location !== 'string') problems.push('location is missing')
  if (backend.timeBoundMs !== undefined && !(typeof backend.timeBoundMs === 'number' && backend.timeBoundMs > 0 && Number.isFinite(backend.timeBoundMs))) {
    problems.push('timeBoundMs must be a positive number of milliseconds')
  }

  return problems
}
