import type {Readable} from 'node:stream'

/**
 * THE storage contract. Every backend (local, s3, or a third-party plugin) implements
 * `StorageBackend`, and ships as an oclif plugin whose `dbb:storage-provider` hook returns a
 * `StorageProvider`. Backends import this file for types only: they must not depend on dbb's
 * runtime, so errors are signalled by shape (see "Errors" below), not by class.
 *
 * Keys are relative, `/`-separated names such as `backup_20261121T030000Z.sql.gz` or
 * `wal/000000010000000000000001.gz`. Core only passes keys made of `[A-Za-z0-9._-]` segments;
 * a backend still rejects `..`, empty segments and absolute keys, because a key is never
 * allowed to address anything outside the backend's location.
 *
 * Errors:
 *  - a missing key: an Error with `code: 'NOT_FOUND'` (from get, stat returns undefined instead);
 *  - `put` with `overwrite: false` onto an existing key: `code: 'ALREADY_EXISTS'`;
 *  - bad settings in `create`: an Error with `name: 'StorageConfigError'` and
 *    `issues: [{variable, message, example}]`, reported to the user line by line, exit code 2;
 *  - anything else: an Error whose message names the cause in words an operator can act on,
 *    without secrets.
 *
 * Time: every operation of a networked backend fails within a bound it documents (as settings,
 * e.g. the s3 backend's S3_CONNECT_TIMEOUT and S3_REQUEST_TIMEOUT): to connect, to the first byte
 * of an answer, and between bytes while a transfer is under way — with a message naming the
 * endpoint. A transfer is not cut while bytes flow, and a `get` stream whose reader stops reading
 * (backpressure) is not cut for that: only silence while the reader is waiting counts.
 */

export interface ObjectInfo {
  key: string
  sizeBytes: number
  lastModified: Date
}

export interface PutOptions {
  /** Aborting stops the write, and nothing remains under `key`. */
  signal?: AbortSignal
  /** false: fail with ALREADY_EXISTS instead of replacing an existing object (best effort where the store cannot do it atomically). */
  overwrite?: boolean
  contentType?: string
}

export interface GetOptions {
  /** Byte range, inclusive at both ends, as in HTTP Range. */
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
   * alone whatever their age. The cleanup at the start of a run (src/backup/leftovers.ts) passes
   * the keys of writers it knows are dead, with `olderThan` = now: a backend that implements
   * `sweep` MUST honour it, or it would abort a live writer's upload.
   */
  only?: (key: string) => boolean
}

export interface ListOptions {
  /**
   * Only keys that sort after this one (byte order of the full key), as S3's StartAfter: a caller
   * that needs the tail of a large prefix (the newest WAL) lists that tail, not the whole prefix.
   * Optional for backends: one that ignores it lists everything, so callers filter as well.
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
   * Stores the whole stream under `key`. Resolves only once the object is durably stored under its
   * final name; a reader never sees a partial object under `key`. If the stream errors or the
   * signal aborts, nothing is left under `key` and the promise rejects with the original error.
   */
  put(key: string, body: Readable, options?: PutOptions): Promise<{sizeBytes: number}>
  /** A stream of the object's bytes (or of the requested range). Rejects with NOT_FOUND. */
  get(key: string, options?: GetOptions): Promise<Readable>
  /** Metadata of one object, or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>
  /** Every object whose key starts with `prefix` (`''` for all), in no particular order; pages lazily. */
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
   * files. Optional: a backend that stages nothing leaves it out. Called by `prune` with
   * `olderThan` = now − ORPHAN_GRACE: a leftover started at or after `olderThan` may belong to a
   * writer that is still running and MUST NOT be touched. Only leftovers under this backend's own
   * location are considered. Returns what was removed (with `dryRun`, what would be); a store that
   * cannot list its staged data resolves to `[]`. Errors reject as for any other operation.
   */
  sweep?(olderThan: Date, options?: SweepOptions): Promise<StagedLeftover[]>
}

/**
 * One setting a backend reads: an environment variable, mirrored by a flag on the commands that use
 * storage. Core derives the flag, `--help`, `dbb backends` and the README table from it; the
 * backend applies its own default in `create`, and declares it here so people see it (a test
 * checks that setting a declared `default` explicitly changes nothing).
 */
export interface StorageSetting {
  env: string
  flag: string
  /** One line; no default in it (that is `default` / `defaultText`). */
  summary: string
  example: string
  secret?: boolean
  /** The value used when unset, as a user would write it (`16MiB`). */
  default?: string
  /** A default that depends on something else, in words (`true when S3_ENDPOINT is set, else false`). */
  defaultText?: string
  /** Unset is an error when this backend is selected. */
  required?: boolean
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
  /** The value of STORAGE_BACKEND that selects this backend. Lowercase, `[a-z0-9-]`. */
  name: string
  summary: string
  settings: StorageSetting[]
  /** Validates settings (keyed by env variable, blank ones absent) and returns a ready backend. Heavy SDKs load here, lazily. */
  create(settings: Readonly<Record<string, string | undefined>>, context: ProviderContext): Promise<StorageBackend>
}

/** The oclif hook event a storage plugin declares in its package.json (`oclif.hooks`). */
export const STORAGE_PROVIDER_HOOK = 'dbb:storage-provider'
