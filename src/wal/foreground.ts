import {createHash} from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {recordedProcessAlive} from '../process-alive'

/**
 * The foreground of archive_command and restore_command when the background already did the work:
 * PostgreSQL runs one process per WAL segment, and at 16 MiB a segment a 100 MB/s server starts six
 * of them a second, one after the other. A Node start is most of a call's cost (BENCHMARKS.md
 * "WAL archiving"), so these two answers load nothing but `fs`, `path` and `crypto` (bin/run.js
 * requires this file before anything else) and use synchronous calls; every other case returns
 * undefined and the caller goes on to the full fast path (src/wal/fast-cli.ts), which loads the
 * config, the logger and the storage backend.
 *
 *  - `wal push --async <pg_wal/N>`: the spool uploader's read-ahead (src/wal/spool.ts) stored N in
 *    storage before PostgreSQL asked and left a marker `<spool>/uploaded/N` holding the identity of
 *    the pg_wal file it copied (device, inode, size, mtime and ctime, equal before and after the
 *    copy). The push exits 0 only if the file PostgreSQL names now has that same identity: the same
 *    inode, never renamed (recycling renames), never written since (writes move mtime). A marker
 *    that does not match is not used; the full path then spools the file's present content. While
 *    an uploader doing read-ahead on this pg_wal runs, the push waits for the marker a bounded
 *    time (the uploader usually has the segment in flight: it is the oldest `.ready` one).
 *  - `wal fetch N <dest>`: the prefetcher (src/wal/prefetch.ts) already put N in the queue,
 *    verified and complete: one rename hands it to PostgreSQL; the prefetcher is told which segment
 *    recovery reached, so it keeps the queue ahead.
 */

/** A WAL segment name; .history/.backup/.partial files are rare and take the full path. */
const SEGMENT = /^[0-9A-F]{24}$/
/** A timeline history file (src/wal/segments.ts, which this file does not load): the prefetcher answers those too. */
const HISTORY = /^[0-9A-F]{8}\.history$/
/** The spool's file names, which src/wal/spool.ts shares (and bin/dbb-wal spells out again: it is sh). */
export const UPLOADED_DIR = 'uploaded'
export const LOCK_FILE = 'uploader.pid'
export const ERROR_FILE = 'uploader.error'
/** The prefetcher reads which segment recovery asked for last from this file in its queue. */
export const WANTED_FILE = 'wanted'
export const PREFETCH_PID_FILE = 'uploader.pid'
/**
 * bin/dbb-wal asks the running prefetcher about a file that is not queued (`<nonce> <name>`), and
 * the prefetcher answers `<nonce> <name> queued|absent|failed` only after asking storage itself,
 * after it read the question (src/wal/prefetch.ts). Both names start with WANTED_FILE, so the
 * queue's clean-up keeps them.
 */
export const ASK_FILE = 'wanted.ask'
/**
 * The queue's storage identity on one line (identityLine), written by its prefetcher: bin/dbb-wal
 * finds the queue of its archive by comparing this line with its own, with nothing but sh
 * builtins, instead of hashing the identity with a program per call (the directory name is that
 * hash). Its second line names the lock it was published under (publisherLine): see queueServed.
 */
export const IDENTITY_FILE = 'identity'
export const ANSWER_FILE = 'wanted.answer'
/** Default of WAL_PREFETCH (src/config/wal-async.ts), read here without loading the config module. */
const DEFAULT_PREFETCH = 8
/**
 * How long a push waits for the read-ahead to store its segment. The uploader works oldest first,
 * so it normally has this segment in flight; past this (storage slow or down) the push spools the
 * segment itself, which is what keeps PostgreSQL going during an outage.
 */
const READ_AHEAD_WAIT_MS = 5000
const POLL_MS = 10
/** Set by bin/dbb-wal to the segment whose read-ahead marker it already waited for (an internal hand-off, not a setting). */
export const READ_AHEAD_WAITED = 'DBB_READ_AHEAD_WAITED'

/**
 * The identity of a file as the read-ahead records it in its marker: device, inode, size, mtime and
 * ctime as seconds.nanoseconds — exactly what GNU `stat -c '%d %i %s %.9Y %.9Z'` prints, so the
 * POSIX sh foreground (bin/dbb-wal) compares the marker without starting Node.
 */
export function fileIdentity(stats: fs.BigIntStats): string {
  const seconds = (ns: bigint) => `${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, '0')}`
  return [stats.dev, stats.ino, stats.size, seconds(stats.mtimeNs), seconds(stats.ctimeNs)].join(' ')
}

/** The identity of the file at `filePath` now, or undefined if it is gone. */
export function currentIdentity(filePath: string): string | undefined {
  try {
    return fileIdentity(fs.statSync(filePath, {bigint: true}))
  } catch {
    return undefined
  }
}

export function uploadedMarkerPath(spoolDir: string, name: string): string {
  return path.join(spoolDir, UPLOADED_DIR, name)
}

/**
 * Whether storage holds exactly the file at `walPath` according to the read-ahead's marker (see
 * above); consumes a matching marker. A marker for another file under the same name is left alone.
 */
export function takeMatchingMarker(spoolDir: string, walPath: string): boolean {
  const marker = uploadedMarkerPath(spoolDir, path.basename(walPath))
  let recorded: string
  try {
    recorded = fs.readFileSync(marker, 'utf8').trim()
  } catch {
    return false
  }

  if (recorded === '' || recorded !== currentIdentity(walPath)) return false
  fs.rmSync(marker, {force: true})
  return true
}

export interface SpoolLock {
  pid: number
  /** The pg_wal the uploader reads ahead ('' for none). */
  readAheadDir: string
  /** The holder's start time (processStartTime), so a later process given the same pid is not taken for it. */
  startTime?: string
  /**
   * The holder's own random tag (src/wal/spool.ts): two processes in separate pid namespaces started
   * in the same clock tick have the same pid and start time, and only this tells them apart.
   */
  tag?: string
}

/**
 * The spool's lock file: the uploader's pid on the first line (bin/dbb-wal reads only that one), the
 * pg_wal it reads ahead on the second ('' for none), its start time on the third (absent in locks
 * written before session 11), its process tag on the fourth (absent before session 21). `file`:
 * another file in the spool of the same form (a lock moved aside, see lockSpool).
 */
export function uploaderLock(spoolDir: string, file = LOCK_FILE): SpoolLock | undefined {
  let text: string
  try {
    text = fs.readFileSync(path.join(spoolDir, file), 'utf8')
  } catch {
    return undefined
  }

  const [pidLine, readAheadDir = '', startTime = '', tag = ''] = text.split('\n')
  const pid = Number(pidLine.trim())
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  return {pid, readAheadDir: readAheadDir.trim(), ...(startTime.trim() ? {startTime: startTime.trim()} : {}), ...(tag.trim() ? {tag: tag.trim()} : {})}
}

/** Whether the process that wrote `lock` still holds it (runs, and is that process, not a later one with its pid). */
export function lockHolderRuns(lock: SpoolLock | undefined): boolean {
  return lock !== undefined && recordedProcessAlive(lock.pid, lock.startTime)
}

const sleeper = new Int32Array(new SharedArrayBuffer(4))
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms)
}

/** `wal push --async <walPath>` answered from the read-ahead; undefined: take the full path. */
export function pushFromReadAhead(walPath: string, env: NodeJS.ProcessEnv, waitMs = READ_AHEAD_WAIT_MS): number | undefined {
  const spool = env.WAL_SPOOL_DIR?.trim()
  const name = path.basename(walPath)
  if (!spool || !SEGMENT.test(name)) return undefined
  // bin/dbb-wal already waited for this segment's marker before it started Node: do not wait twice.
  if (env[READ_AHEAD_WAITED] === name) waitMs = 0
  const spoolDir = path.resolve(spool)
  const walDir = path.dirname(path.resolve(walPath))
  const deadline = Date.now() + waitMs
  for (;;) {
    if (takeMatchingMarker(spoolDir, walPath)) {
      process.stdout.write(`Already stored by the uploader: ${name}\n`)
      return 0
    }

    // A marker that is there but vouches for another file will not change: no use waiting.
    if (fs.existsSync(uploadedMarkerPath(spoolDir, name))) return undefined
    // Wait only for an uploader that is reading ahead this very pg_wal and is not failing, and only
    // for a segment PostgreSQL marked ready: the read-ahead copies nothing else, so a push of any
    // other file (by hand, by a tool that is not PostgreSQL's archiver) would wait in vain.
    const lock = uploaderLock(spoolDir)
    const worthWaiting =
      lock !== undefined &&
      lock.readAheadDir === walDir &&
      lockHolderRuns(lock) &&
      !fs.existsSync(path.join(spoolDir, ERROR_FILE)) &&
      fs.existsSync(path.join(walDir, 'archive_status', `${name}.ready`))
    if (!worthWaiting || Date.now() >= deadline || !fs.existsSync(walPath)) return undefined
    sleepSync(POLL_MS)
  }
}

/**
 * What identifies the archive a prefetch queue belongs to: the storage settings in the environment
 * that say where WAL is read from. The queue is keyed by it, so a queue filled from one archive is
 * never served to a restore_command reading another; the prefetcher runs with the environment of
 * the fetch that started it, so both compute the same key.
 */
export function storageIdentity(env: NodeJS.ProcessEnv): string {
  const backend = env.STORAGE_BACKEND?.trim() || 'local'
  const localDir = env.BACKUP_LOCAL_DIR?.trim()
  const parts = [
    `backend=${backend}`,
    `local=${localDir ? path.resolve(localDir) : ''}`,
    ...['S3_ENDPOINT', 'S3_REGION', 'S3_BUCKET', 'S3_PREFIX'].map((variable) => `${variable}=${env[variable]?.trim() ?? ''}`),
  ]
  return parts.join('\n')
}

/**
 * storageIdentity on one line, as bin/dbb-wal builds it (`backend=… local=… S3_ENDPOINT=… …`,
 * one space apart); undefined when a value holds white space, which the sh never matches (it
 * leaves such values to Node), so no other identity can read as this one.
 */
export function identityLine(identity: string): string | undefined {
  const parts = identity.split('\n')
  return parts.some((part) => /\s/.test(part)) ? undefined : parts.join(' ')
}

/** The queue directory for one archive: `<WAL_SPOOL_DIR>/fetch-queue/<hash of its storage identity>`. */
export function queueDirFor(spoolDir: string, identity: string): string {
  return path.join(spoolDir, 'fetch-queue', createHash('sha256').update(identity).digest('hex').slice(0, 16))
}

/**
 * The detached prefetcher's log, `<WAL_SPOOL_DIR>/prefetch.log`, beside the spool uploader's
 * `uploader.log`: one file for every archive's prefetcher (its lines name the segment or the queue).
 */
export function prefetchLogFor(spoolDir: string): string {
  return path.join(path.resolve(spoolDir), 'prefetch.log')
}

/** The spool uploader's log, `<WAL_SPOOL_DIR>/uploader.log` (ensureUploader in src/wal/spool.ts, startUploaderEarly). */
export function uploaderLogFor(spoolDir: string): string {
  return path.join(path.resolve(spoolDir), 'uploader.log')
}

let uploaderStartedHere = false

/** Whether startUploaderEarly started an uploader in this process (ensureUploader then starts no second one). */
export function uploaderStartedEarly(): boolean {
  return uploaderStartedHere
}

/**
 * Starts the spool uploader now, for an async push the read-ahead did not answer, when none holds
 * the spool: before this process loads the config, the logger and zod (≈ 0.1 s), which the full
 * path's ensureUploader waits for. Begun here, the uploader's Node start overlaps this push's work
 * on the other core, and its read-ahead answers the next pushes that much sooner: at the start of
 * a burst after an idle exit, that start is what the archiver lags by (BENCHMARKS.md, "Session
 * 17"; measured, the gain is within this machine's spread). It starts as ensureUploader starts it,
 * with this pg_wal to read ahead.
 */
export function startUploaderEarly(walPath: string, env: NodeJS.ProcessEnv, start: (spoolDir: string, walDir: string) => void): void {
  const spool = env.WAL_SPOOL_DIR?.trim()
  if (!spool || !SEGMENT.test(path.basename(walPath))) return
  const spoolDir = path.resolve(spool)
  if (lockHolderRuns(uploaderLock(spoolDir))) return
  start(spoolDir, path.dirname(path.resolve(walPath)))
  uploaderStartedHere = true
}

/** WAL_PREFETCH as a count; undefined when it is not a plain count (the full path reports the error). */
export function prefetchCount(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.WAL_PREFETCH?.trim()
  if (raw === undefined || raw === '') return DEFAULT_PREFETCH
  return /^\d{1,3}$/.test(raw) ? Number(raw) : undefined
}

/** The prefetch queue a fetch in this environment uses, or undefined when prefetch is off. */
export function prefetchQueue(name: string, env: NodeJS.ProcessEnv): string | undefined {
  const spool = env.WAL_SPOOL_DIR?.trim()
  const count = prefetchCount(env)
  if (!spool || !count || !SEGMENT.test(name)) return undefined
  return queueDirFor(path.resolve(spool), storageIdentity(env))
}

/**
 * Tells the prefetcher of `queueDir` that recovery asked for `name` (it keeps the segments after it
 * queued) and starts one if none runs. `start` spawns it (bin/run.js and fast-cli pass the one
 * spawn module's helper).
 */
export function notePrefetchWanted(queueDir: string, name: string, segmentSize: number, start: (name: string, segmentSize: number) => void): void {
  fs.mkdirSync(queueDir, {recursive: true, mode: 0o700})
  const wanted = path.join(queueDir, WANTED_FILE)
  fs.writeFileSync(`${wanted}.tmp`, `${name} ${segmentSize}\n`)
  fs.renameSync(`${wanted}.tmp`, wanted)
  if (!prefetcherRunning(queueDir)) start(name, segmentSize)
}

/** Whether a live prefetcher holds `queueDir`. */
export function prefetcherRunning(queueDir: string): boolean {
  return lockHolderRuns(uploaderLock(queueDir))
}

/** IDENTITY_FILE's second line: the lock holder that published it, pid and start time as its lock file records them. */
export function publisherLine(lock: Pick<SpoolLock, 'pid' | 'startTime'>): string {
  return `${lock.pid} ${lock.startTime ?? ''}`
}

/** What a prefetcher holding `lock` writes to IDENTITY_FILE (an empty first line when the sh cannot match its identity). */
export function identityFileText(line: string | undefined, lock: Pick<SpoolLock, 'pid' | 'startTime'>): string {
  return `${line ?? ''}\n${publisherLine(lock)}\n`
}

/**
 * Whether `queueDir` may be served from now: a live prefetcher holds it AND published it under its
 * own lock. A prefetcher publishes only after it removed what earlier ones left (a killed replay's
 * read-ahead, entries of an archive since wiped and reused); between a new prefetcher's lock and
 * that clean-up, the identity file still names the previous holder, and the queue is not served.
 * bin/dbb-wal makes the same check with builtins (fetch_queued).
 */
export function queueServed(queueDir: string): boolean {
  const lock = uploaderLock(queueDir)
  if (lock === undefined || !lockHolderRuns(lock)) return false
  try {
    return fs.readFileSync(path.join(queueDir, IDENTITY_FILE), 'utf8').split('\n')[1] === publisherLine(lock)
  } catch {
    return false
  }
}

/** How long the fetch that started a prefetcher waits for it to serve bin/dbb-wal (a Node start under load). */
export const PREFETCHER_READY_WAIT_MS = 1500

/**
 * Waits (bounded) until the prefetcher just started holds `queueDir` and published it
 * (queueServed): the fetch that started it returns only then, so PostgreSQL's next request is answered
 * by bin/dbb-wal through the queue instead of by a second Node start (≈ 0.4 s at the start of every
 * replay; BENCHMARKS.md, "Session 7"). Never changes the answer of the fetch, only when it is given;
 * a prefetcher that does not come up costs this wait once.
 */
export function awaitPrefetcherReady(queueDir: string, waitMs = PREFETCHER_READY_WAIT_MS): boolean {
  const deadline = Date.now() + waitMs
  for (;;) {
    if (queueServed(queueDir)) return true
    if (Date.now() >= deadline) return false
    sleepSync(POLL_MS)
  }
}

let prefetcherStartedHere = false

/** Whether startPrefetcherEarly started a prefetcher in this process (the full path then waits for it instead of starting another). */
export function prefetcherStartedEarly(): boolean {
  return prefetcherStartedHere
}

/**
 * Starts the prefetcher of this fetch's queue now, when prefetch is on and none runs — before this
 * process loads the config, the logger and the storage backend (≈ 0.15 s of CPU) for its own
 * download. A recovery's first request (the .history probe) waits for the prefetcher to serve
 * (awaitPrefetcherReady); begun here, the prefetcher's Node start overlaps this one's on the other
 * core instead of following it (BENCHMARKS.md, "Session 13: replay"). It starts as the full path
 * started it: with the requested name and no segment size (backup_label or `wanted` gives it).
 */
export function startPrefetcherEarly(name: string, env: NodeJS.ProcessEnv, start: (name: string, segmentSize: number) => void): void {
  const spool = env.WAL_SPOOL_DIR?.trim()
  if (!spool || !prefetchCount(env) || !(SEGMENT.test(name) || HISTORY.test(name))) return
  if (prefetcherRunning(queueDirFor(path.resolve(spool), storageIdentity(env)))) return
  start(name, 0)
  prefetcherStartedHere = true
}

/** How long the first fetch waits for the prefetcher it started to answer its question (bin/dbb-wal's ANSWER_POLLS: 200 × 10 ms). */
export const ANSWER_WAIT_MS = 2000

/**
 * The first fetch of a recovery (usually the `.history` probe), which just started the prefetcher
 * (startPrefetcherEarly), asks it instead of loading the rest of dbb to ask storage itself: the
 * call waited for the prefetcher to serve anyway (awaitPrefetcherReady), and its own start — the
 * config, the logger, zod, the storage backend, on the other core — only slowed the prefetcher's
 * (BENCHMARKS.md, "Session 14: replay"). The same question and answer as bin/dbb-wal's
 * ask_prefetcher, with the same rule: `absent` is storage's positive "no such object" to a request
 * the prefetcher made after reading this question (the caller then exits 1, "not in archive");
 * `queued` means the file was handed over to `destination` (exit 0). undefined — the prefetcher not
 * ready in time, "failed", no answer, a queue on another filesystem, any error here — sends the
 * caller on to the full path, which asks storage itself.
 */
export function answerFromPrefetcher(name: string, destination: string, env: NodeJS.ProcessEnv, start: (name: string, segmentSize: number) => void, waitMs = ANSWER_WAIT_MS): 'queued' | 'absent' | undefined {
  const spool = env.WAL_SPOOL_DIR?.trim()
  if (!spool || !prefetchCount(env) || !(SEGMENT.test(name) || HISTORY.test(name))) return undefined
  const queueDir = queueDirFor(path.resolve(spool), storageIdentity(env))
  try {
    if (!awaitPrefetcherReady(queueDir)) return undefined
    const holder = uploaderLock(queueDir)
    const nonce = `${process.pid}.${Date.now()}`
    // Written in place, as the sh writes it: the prefetcher takes only a line that parses whole.
    fs.writeFileSync(path.join(queueDir, ASK_FILE), `${nonce} ${name}\n`)
    const deadline = Date.now() + waitMs
    const queued = path.join(queueDir, name)
    for (;;) {
      let answer = ''
      try {
        answer = fs.readFileSync(path.join(queueDir, ANSWER_FILE), 'utf8')
      } catch {
        // No answer yet.
      }

      if (answer === `${nonce} ${name} absent\n`) return 'absent'
      // Queued (answered so, or by the read-ahead before the answer): handed over as a queued file is.
      if (answer === `${nonce} ${name} queued\n` || fs.existsSync(queued)) {
        handOver(queueDir, name, destination, start)
        return 'queued'
      }

      if (answer.startsWith(`${nonce} `) || Date.now() >= deadline || !lockHolderRuns(holder)) return undefined
      sleepSync(POLL_MS)
    }
  } catch {
    return undefined
  }
}

/** `wal fetch <name> <dest>` answered from the prefetch queue; undefined: take the full path. */
export function fetchFromQueue(name: string, destination: string, env: NodeJS.ProcessEnv, start: (name: string, segmentSize: number) => void): number | undefined {
  const queueDir = prefetchQueue(name, env)
  // Only while a prefetcher holds the queue and published it, as bin/dbb-wal serves: what a dead one
  // left (a killed replay's read-ahead) waits for the next prefetcher, which removes it before it
  // publishes, instead of being handed to a later recovery — of an archive since wiped and reused, say.
  if (queueDir === undefined || !queueServed(queueDir)) return undefined
  try {
    handOver(queueDir, name, destination, start)
  } catch {
    // Not queued (or the queue is on another filesystem): the full path fetches it from storage.
    return undefined
  }

  return 0
}

/**
 * Hands queued `name` over to PostgreSQL at `destination` (a rename: throws when it is not queued or
 * the queue is on another filesystem, and the caller takes the full path), says so, and tells the
 * prefetcher where recovery is.
 */
function handOver(queueDir: string, name: string, destination: string, start: (name: string, segmentSize: number) => void): void {
  fs.renameSync(path.join(queueDir, name), destination)
  // PostgreSQL writes a restore_command's output into its log: where an operator sees prefetch working.
  process.stdout.write(`Restored ${name} from the prefetch queue\n`)
  if (!SEGMENT.test(name)) return
  try {
    notePrefetchWanted(queueDir, name, fs.statSync(destination).size, start)
  } catch {
    // The file is delivered; a prefetcher that cannot be told or started only costs speed.
  }
}
