import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {OperationError, UsageError, errorMessage, isNotFound} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {hashFile, pushWal} from './archive'
import {isWalFileName} from './segments'
import {spawnDetachedDbb} from '../backup/child-process'
import {processAlive, processStartTime} from '../process-alive'
import {
  ERROR_FILE,
  LOCK_FILE,
  type SpoolLock,
  UPLOADED_DIR,
  fileIdentity,
  lockHolderRuns,
  takeMatchingMarker,
  uploadedMarkerPath,
  uploaderLock,
  uploaderLogFor,
  uploaderStartedEarly,
} from './foreground'
import {copyFileWhole, syncDirectory} from '../sync-directory'

/**
 * Asynchronous archiving, after pgBackRest's archive-push-async: archive_command only QUEUES a
 * segment in a local spool directory and returns; an uploader (a detached `dbb wal spool-upload`
 * started by the push, or `dbb serve`) stores the queue into storage, several segments at once,
 * oldest names first, and removes each from the spool only after storage holds it.
 *
 * What "durable" means before PostgreSQL is told "archived" (exit 0) and may recycle the segment:
 * the spool holds a complete COPY under its final name — copied to `<name>.dbb-partial`, fsynced,
 * renamed, and the spool directory fsynced — so a power loss after the acknowledgement still finds
 * it. It is a copy, never a hard link: PostgreSQL recycles an archived segment by renaming its
 * inode to a future segment name and overwriting it in place, which would overwrite a hard-linked
 * spool entry too. The spool is then as durable as the disk it is on: on the same volume as pg_wal
 * it survives everything pg_wal survives and is lost with it (a lost volume loses the newest WAL
 * either way); put it on another volume to survive that too.
 *
 * Read-ahead (pgBackRest's async push does the same): the uploader also looks at
 * `pg_wal/archive_status/*.ready` — segments PostgreSQL has finished and will hand to
 * archive_command next — and stores those ahead of being asked. After storage holds one it leaves
 * a marker `<spool>/uploaded/<name>`; the later `wal push --async <name>` finds the marker and
 * answers at once, with no copy (src/wal/foreground.ts, which loads nothing else). A read-ahead
 * segment is first copied out of pg_wal and used only if its `.ready` file still exists after the
 * copy and the file's identity (device, inode, size, mtime, ctime) is the same after the copy as
 * before: until PostgreSQL sees the segment archived it never recycles it, so the copy is the
 * segment's final content. The marker records that identity, and the push acknowledges from it only
 * when the file PostgreSQL names is still that file: a segment renamed (recycled) or written after
 * the copy is never acknowledged from the stale copy; the push then spools its present content.
 *
 * Bounded: when WAL_SPOOL_MAX_SEGMENTS files wait, the push fails (exit 1), PostgreSQL keeps the
 * segment in pg_wal and retries, so a storage outage is never "acknowledged and dropped" (unlike
 * pgBackRest's archive-push-queue-max, which drops WAL when full).
 */

const PARTIAL_SUFFIX = '.dbb-partial'
const AHEAD_DIR = 'ahead'
const IDLE_POLL_MS = 20

/**
 * This process in the spool's lock and file names. Its pid alone is not enough: two uploaders in
 * separate pid namespaces (serve in a sidecar that does not share the server's, beside a detached
 * uploader a push started) can both be pid 1, each takes the other's lock for stale, and with
 * pid-named files they shared their read-ahead copies and their staged lock file (one removed or
 * truncated the other's copy mid-upload). The start time tells the holder of a lock apart; a random
 * tag makes the names of this process's files its own.
 */
const PROCESS_TAG = `${process.pid}.${randomBytes(4).toString('hex')}`
// Read from /proc at the first lock, not when a push loads this module (null: not read yet).
let ownStartTime: string | undefined | null = null
/**
 * Whether `lock` (a spool's or prefetch queue's) names this very process: pid, start time and, in
 * locks that carry it, the process tag. Two uploaders in separate pid namespaces started in the same
 * clock tick (/proc's start time is in 10 ms ticks) are both pid 1 with one start time: without the
 * tag each took the other's lock for its own leftover (heldByAnother) and both uploaded.
 */
export function isThisProcess(lock: SpoolLock | undefined): lock is SpoolLock {
  if (ownStartTime === null) ownStartTime = processStartTime(process.pid)
  return lock !== undefined && lock.pid === process.pid && (lock.startTime ?? '') === (ownStartTime ?? '') && (lock.tag === undefined || lock.tag === PROCESS_TAG)
}

/** The detached uploader exits once the spool stayed empty this long (the next push starts another). */
export const UPLOADER_IDLE_EXIT_MS = 10_000

export interface SpoolOptions {
  spoolDir: string
  maxSegments: number
}

export interface QueueResult {
  name: string
  /** `uploaded`: the uploader had already stored it (read-ahead); nothing was copied. */
  outcome: 'queued' | 'already-queued' | 'uploaded'
  queuedFiles: number
}

/**
 * Whether the uploader already stored the file at `filePath` ahead of the push: its marker exists
 * and records this very file (src/wal/foreground.ts, fileIdentity); consumes the marker.
 */
export async function takeUploadedMarker(spoolDir: string, filePath: string): Promise<boolean> {
  return isWalFileName(path.basename(filePath)) && takeMatchingMarker(spoolDir, filePath)
}

/** The WAL files waiting in the spool, oldest name first (the order they are uploaded in). */
export async function spooledNames(spoolDir: string): Promise<string[]> {
  const entries = await fs.readdir(spoolDir).catch((error: unknown) => {
    if (isNotFound(error)) return [] as string[]
    throw error
  })
  return entries.filter((entry) => isWalFileName(entry)).sort()
}

/**
 * Records the uploader's last error in `<spool>/uploader.error`, which a full-spool push quotes and
 * /metrics reports as failing. Whole or not at all: a push reading it mid-write would tell
 * PostgreSQL's log that no error was reported (parallel uploads fail together and rewrite it at
 * once; `writer` keeps their staged names apart). Best effort: a spool that cannot take it fails
 * other ways that are reported.
 */
export async function reportUploaderError(spoolDir: string, message: string, writer: string): Promise<void> {
  const errorFile = path.join(spoolDir, ERROR_FILE)
  // Tagged with this process too: one killed between write and rename leaves it to removeDeadProcessFiles.
  const staged = `${errorFile}.${PROCESS_TAG}.${writer}.tmp`
  await fs
    .writeFile(staged, `${message}\n`)
    .then(() => fs.rename(staged, errorFile))
    .catch(() => fs.rm(staged, {force: true}).catch(() => {}))
}

/** Spool size for /metrics and logs. */
export async function spoolStatus(spoolDir: string): Promise<{files: number; bytes: number; lastError?: string}> {
  const names = await spooledNames(spoolDir)
  let bytes = 0
  for (const name of names) bytes += (await fs.stat(path.join(spoolDir, name)).catch(() => ({size: 0}))).size
  const lastError = await fs.readFile(path.join(spoolDir, ERROR_FILE), 'utf8').catch(() => undefined)
  return {files: names.length, bytes, lastError: lastError?.trim() || undefined}
}

/**
 * `wal push --async`: makes `filePath` durable in the spool (see above) and returns. Re-queuing a
 * file that is already spooled with identical content succeeds (PostgreSQL retries after a crash);
 * different content fails, like the synchronous push's split-brain check.
 */
export async function queueWal(filePath: string, options: SpoolOptions): Promise<QueueResult> {
  const name = path.basename(filePath)
  if (!isWalFileName(name)) {
    throw new UsageError(`${name} is not a WAL file name (expected a segment such as 000000010000000000000003, or a .history / .backup file)`)
  }

  const {spoolDir} = options
  if (await takeUploadedMarker(spoolDir, filePath)) return {name, outcome: 'uploaded', queuedFiles: (await spooledNames(spoolDir)).length}
  await fs.mkdir(spoolDir, {recursive: true, mode: 0o700})
  const target = path.join(spoolDir, name)
  const queued = await spooledNames(spoolDir)
  if (queued.includes(name)) {
    const [here, there] = await Promise.all([hashFile(filePath), hashFile(target)])
    if (here !== there) {
      throw new OperationError(`${name} is already queued in ${spoolDir} with different content; nothing was overwritten (two servers sharing one spool?)`)
    }

    return {name, outcome: 'already-queued', queuedFiles: queued.length}
  }

  if (queued.length >= options.maxSegments) {
    const {lastError} = await spoolStatus(spoolDir)
    throw new OperationError(
      `the WAL spool ${spoolDir} is full (${queued.length} files waiting, WAL_SPOOL_MAX_SEGMENTS=${options.maxSegments}); ` +
        `${name} stays in pg_wal and PostgreSQL will retry. ${lastError ? `The uploader's last error: ${lastError}` : 'The uploader has not reported an error yet.'}`,
    )
  }

  try {
    await copyFileWhole(filePath, `${target}${PARTIAL_SUFFIX}`, target)
    await syncDirectory(spoolDir)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const why = code === 'ENOSPC' || code === 'EDQUOT' ? ` (the filesystem holding WAL_SPOOL_DIR is full: free space there, or let the uploader drain the spool)` : ''
    throw new OperationError(`queuing ${name} in ${spoolDir} failed${why}: ${errorMessage(error)}; ${name} stays in pg_wal and PostgreSQL will retry`, {cause: error})
  }

  return {name, outcome: 'queued', queuedFiles: queued.length + 1}
}

/** A held spool (or prefetch queue) lock. */
export interface SpoolLockHandle {
  /** Removes the lock if it still names this process. */
  release(): Promise<void>
  /**
   * True once the lock names another process: the one takeover interleaving left (see
   * removeStaleLock) gave it to someone else, and this holder must stop starting work so the two
   * overlap only by what is in flight. A lock momentarily absent (moved aside by a taker that is
   * about to link it back) is not lost.
   */
  lost(): boolean
}

/**
 * One uploader per spool, by a pid file created exclusively. A pid file whose process is gone (an
 * uploader killed with SIGKILL) is stale and taken over. Returns the held lock, or undefined when
 * another live process holds the spool.
 */
export async function lockSpool(spoolDir: string, readAheadDir?: string): Promise<SpoolLockHandle | undefined> {
  await fs.mkdir(spoolDir, {recursive: true, mode: 0o700})
  const lockPath = path.join(spoolDir, LOCK_FILE)
  // Written whole under a name of this process, then linked to the lock's name (link() fails if it
  // exists): the lock file never exists half-written. With a plain exclusive create, a second
  // process could read it empty between create and write, take it for stale, remove it and hold
  // the lock too — two prefetchers then wrote the same queue entry (a partial segment was served).
  // The second line tells a waiting push which pg_wal this uploader reads ahead (src/wal/foreground.ts).
  const staged = `${lockPath}.${PROCESS_TAG}`
  await fs.writeFile(staged, `${process.pid}\n${readAheadDir ?? ''}\n${processStartTime(process.pid) ?? ''}\n${PROCESS_TAG}\n`)
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await fs.link(staged, lockPath)
        return {
          async release() {
            if (isThisProcess(uploaderLock(spoolDir))) await fs.rm(lockPath, {force: true})
          },
          lost() {
            const holder = uploaderLock(spoolDir)
            return holder !== undefined && !isThisProcess(holder)
          },
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      }

      if (heldByAnother(uploaderLock(spoolDir))) return undefined
      if (!(await removeStaleLock(lockPath))) return undefined
    }

    return undefined
  } finally {
    await fs.rm(staged, {force: true})
  }
}

/**
 * Removes the lock at `lockPath`, which was just seen held by a dead process (or by this one: its own
 * leftover, see heldByAnother); false when it turned out to be another live holder's. Every process that saw it stale at the same moment gets here, and
 * removing it by name could remove the lock another of them has taken since (two uploaders then
 * shared the spool's read-ahead copies; wal-queue-races.e2e made it happen). So it is first moved
 * aside under this process's own name: a rename moves any one lock file once, and what was moved is
 * looked at before it is dropped. A live holder's lock is linked back and left to it.
 */
async function removeStaleLock(lockPath: string): Promise<boolean> {
  const aside = `${lockPath}.${PROCESS_TAG}.stale`
  try {
    await fs.rename(lockPath, aside)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true // another process moved it: try to take the lock
    throw error
  }

  try {
    if (!heldByAnother(uploaderLock(path.dirname(lockPath), path.basename(aside)))) return true
    await fs.link(aside, lockPath).catch((error: NodeJS.ErrnoException) => {
      // A third process took the lock in between: it and the moved lock's owner both think they hold
      // it. The one interleaving left (three takers, two races at once); RELIABILITY.md, session 11.
      if (error.code !== 'EEXIST') throw error
    })
    return false
  } finally {
    await fs.rm(aside, {force: true})
  }
}

/**
 * Whether `lock` is held by a live process other than this one. A lock naming this very process
 * when it asks for the lock is its own leftover: a release that failed (the spool unreadable or
 * read-only at that moment, and serve goes on). Taken for held, it kept serve from ever taking the
 * spool again, and every push from starting an uploader (serve runs): nothing drained the spool.
 */
function heldByAnother(lock: SpoolLock | undefined): boolean {
  return lockHolderRuns(lock) && !isThisProcess(lock)
}

/** Whether some process is uploading this spool now. */
export async function uploaderRunning(spoolDir: string): Promise<boolean> {
  return lockHolderRuns(uploaderLock(spoolDir))
}

/**
 * Starts a detached `dbb wal spool-upload` unless an uploader already holds the spool. Its output
 * goes to `<spool>/uploader.log`, never to PostgreSQL's archiver pipe; it inherits the environment,
 * which holds the storage settings it needs.
 */
export async function ensureUploader(spoolDir: string, cliEntry: string, walDir?: string): Promise<void> {
  // bin/run.js may have started it already (startUploaderEarly): it has not taken the lock yet.
  if (uploaderStartedEarly() || (await uploaderRunning(spoolDir))) return
  spawnDetachedDbb(cliEntry, ['wal', 'spool-upload', ...(walDir ? [walDir] : [])], uploaderLogFor(spoolDir))
}

export interface UploaderOptions {
  storage: StorageBackend
  spoolDir: string
  parallel: number
  logger?: Logger
  signal?: AbortSignal
  /** Exit after the spool stayed empty this long (a detached uploader); undefined: run until aborted (dbb serve). */
  idleExitMs?: number
  /** pg_wal, whose archive_status/*.ready segments are stored ahead of their push (see above). */
  walDir?: string
  /** Called after each file is stored and removed from the spool. */
  onStored?: (name: string) => void
  /** The spool lock this uploader holds: once lost to another uploader, no new upload starts. */
  lock?: Pick<SpoolLockHandle, 'lost'>
  /** Start no upload from this time on (ms since the epoch) and return once those in flight end. */
  stopStartingAt?: number
}

/**
 * Uploads the spool until idle (or aborted): up to `parallel` files at once, oldest names first.
 * Each file goes through the synchronous push (idempotent, compares by sha256), and is deleted from
 * the spool only after that resolved, so a SIGKILL at any point leaves it queued and the next
 * uploader re-pushes it ("already archived", identical). A failure keeps the file, is written to
 * `<spool>/uploader.error` (which a full-spool push reports to PostgreSQL's log) and retried with
 * back-off.
 */
export async function runUploader(options: UploaderOptions): Promise<{stored: number; readAheadFailed: boolean}> {
  const {spoolDir, storage, logger, signal} = options
  await removeDeadProcessFiles(spoolDir)
  const inFlight = new Set<string>()
  let stored = 0
  let idleSince = Date.now()
  let backoffMs = 0
  let failed = false
  // The error file an uploader killed while storage failed left behind (a reboot, a pod restart):
  // removed at this uploader's first stored file, or it would be reported for ever — in /metrics, in
  // a full-spool push's message — and every push would stop waiting for the read-ahead.
  let inheritedError = true
  // Set when pg_wal cannot be read (permissions, I/O, a full spool disk for the copy): this uploader
  // stops, because while it holds the lock as reading ahead, every push waits for its marker. Its
  // caller takes the lock again without naming pg_wal and goes on with the spool alone.
  let readAheadFailed = false

  const uploadOne = async (name: string, ahead: boolean) => {
    let file = path.join(spoolDir, name)
    try {
      let identity: string | undefined
      if (ahead) {
        let copy: Awaited<ReturnType<typeof copyAhead>>
        try {
          copy = await copyAhead(spoolDir, options.walDir!, name)
        } catch (error) {
          readAheadFailed = true
          logger?.error({event: 'wal.read_ahead_failed', wal: name, walDir: options.walDir}, `cannot read ${name} ahead from ${options.walDir}: ${errorMessage(error)}; this uploader stops reading ahead`)
          return
        }

        if (copy === undefined) return
        ;({file, identity} = copy)
      }

      // No sha256: nothing reads it here (pushWal's `hash`).
      const result = await pushWal(storage, file, {logger, signal, hash: false})
      if (identity !== undefined) {
        // Written whole under a temporary name, then renamed: a push never reads half a marker. Not
        // fsynced: a marker lost in a crash only sends that push down the spooling path.
        const marker = uploadedMarkerPath(spoolDir, name)
        await fs.writeFile(`${marker}.${PROCESS_TAG}.tmp`, `${identity}\n`)
        await fs.rename(`${marker}.${PROCESS_TAG}.tmp`, marker)
      }

      await fs.rm(file, {force: true})
      if (!ahead) await syncDirectory(spoolDir)
      stored += 1
      options.onStored?.(name)
      logger?.debug({event: 'wal.spool_uploaded', wal: name, outcome: result.outcome}, `uploaded ${name} from the spool`)
    } catch (error) {
      if (ahead) await fs.rm(file, {force: true})
      if (signal?.aborted) return
      failed = true
      const message = `${new Date().toISOString()} ${name}: ${errorMessage(error)}`
      logger?.error({event: 'wal.spool_upload_failed', wal: name}, message)
      await reportUploaderError(spoolDir, message, name)
    } finally {
      inFlight.delete(name)
    }
  }

  const running = new Set<Promise<void>>()
  while (!signal?.aborted) {
    if (options.stopStartingAt !== undefined && Date.now() >= options.stopStartingAt) break
    if (options.lock?.lost()) {
      logger?.warn({event: 'wal.spool_lock_lost', spoolDir}, `another uploader holds the WAL spool ${spoolDir} now; this one stops after its uploads in flight`)
      break
    }

    const spooled = await spooledNames(spoolDir)
    const ahead = options.walDir ? await readyAhead(spoolDir, options.walDir, new Set(spooled)) : []
    const waiting = [...spooled.map((name) => ({name, ahead: false})), ...ahead.map((name) => ({name, ahead: true}))]
      .filter(({name}) => !inFlight.has(name))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    if (waiting.length === 0 && running.size === 0) {
      if (options.idleExitMs !== undefined && Date.now() - idleSince >= options.idleExitMs) break
      // PostgreSQL runs archive_command right after it marks a segment ready, and that push waits for us.
      await sleep(IDLE_POLL_MS, signal)
      continue
    }

    idleSince = Date.now()
    for (const {name, ahead: isAhead} of waiting) {
      if (running.size >= options.parallel) break
      inFlight.add(name)
      const task = uploadOne(name, isAhead).finally(() => running.delete(task))
      running.add(task)
    }

    await Promise.race(running)
    if (readAheadFailed) break
    if (failed) {
      // Storage is failing: finish what is in flight, then wait before trying again.
      await Promise.all(running)
      failed = false
      backoffMs = Math.min(30_000, Math.max(500, backoffMs * 2))
      await sleep(backoffMs, signal)
    } else if (backoffMs > 0 || (inheritedError && stored > 0)) {
      backoffMs = 0
      inheritedError = false
      await fs.rm(path.join(spoolDir, ERROR_FILE), {force: true})
    }
  }

  await Promise.allSettled(running)
  return {stored, readAheadFailed}
}

/**
 * The detached uploader (`dbb wal spool-upload`, started by a push): takes the spool unless another
 * uploader holds it, opens storage, uploads until the spool stayed empty `idleExitMs`. When pg_wal
 * cannot be read ahead it does not exit with the spool full — nothing would drain it before the next
 * push — but takes the lock again without naming pg_wal (so pushes stop waiting for its markers and
 * spool their segments) and drains the spool alone, as serve does until it looks at pg_wal again.
 * Storage is opened only once the lock is held; closing it is the caller's. Undefined: another
 * uploader holds the spool, nothing was done.
 */
export async function runDetachedUploader(
  options: Omit<UploaderOptions, 'storage' | 'lock'> & {openStorage(): Promise<StorageBackend>},
): Promise<{stored: number} | undefined> {
  const {spoolDir} = options
  let walDir = options.walDir === undefined ? undefined : path.resolve(options.walDir)
  let lock = await lockSpool(spoolDir, walDir)
  if (!lock) return undefined
  let stored = 0
  try {
    const storage = await options.openStorage()
    for (;;) {
      const result = await runUploader({...options, storage, walDir, lock})
      stored += result.stored
      if (!result.readAheadFailed || walDir === undefined || options.signal?.aborted) break
      await lock.release()
      walDir = undefined
      // Another uploader a push started in between holds it now: the spool is in its hands.
      lock = await lockSpool(spoolDir)
      if (!lock) break
    }
  } finally {
    await lock?.release()
  }

  return {stored}
}

/** Segments PostgreSQL marked ready to archive that are neither spooled nor already stored ahead. */
async function readyAhead(spoolDir: string, walDir: string, spooled: Set<string>): Promise<string[]> {
  const status = await fs.readdir(path.join(walDir, 'archive_status')).catch(() => [] as string[])
  const ready = status.filter((entry) => entry.endsWith('.ready')).map((entry) => entry.slice(0, -'.ready'.length))
  const uploadedDir = path.join(spoolDir, UPLOADED_DIR)
  await fs.mkdir(uploadedDir, {recursive: true, mode: 0o700})
  const uploaded = new Set(await fs.readdir(uploadedDir))
  // Markers of segments PostgreSQL no longer lists as ready were consumed by a push that raced the uploader.
  const readySet = new Set(ready)
  for (const stale of uploaded) if (isWalFileName(stale) && !readySet.has(stale)) await fs.rm(path.join(uploadedDir, stale), {force: true})
  return ready.filter((name) => isWalFileName(name) && !spooled.has(name) && !uploaded.has(name))
}

/**
 * Copies a ready segment out of pg_wal; returns the copy and the source file's identity, or
 * undefined when PostgreSQL archived it meanwhile or the file changed during the copy (then it may
 * have been recycled and the copy mixed old and new content: discarded). Any other error (pg_wal or
 * the segment not readable, an I/O error, no space for the copy) is thrown: a read error is not
 * "archived meanwhile".
 */
async function copyAhead(spoolDir: string, walDir: string, name: string): Promise<{file: string; identity: string} | undefined> {
  // A directory per uploader: two uploaders (the one lock interleaving left, RELIABILITY.md session
  // 11) never copy into the file the other is reading.
  const aheadDir = path.join(spoolDir, AHEAD_DIR, PROCESS_TAG)
  await fs.mkdir(aheadDir, {recursive: true, mode: 0o700})
  const copy = path.join(aheadDir, name)
  const source = path.join(walDir, name)
  try {
    const before = fileIdentity(await fs.stat(source, {bigint: true}))
    await fs.copyFile(source, copy)
    const after = fileIdentity(await fs.stat(source, {bigint: true}))
    await fs.access(path.join(walDir, 'archive_status', `${name}.ready`))
    if (before !== after) {
      await fs.rm(copy, {force: true})
      return undefined
    }

    return {file: copy, identity: after}
  } catch (error) {
    await fs.rm(copy, {force: true})
    // The segment or its .ready gone: PostgreSQL archived it meanwhile (a push raced us).
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/**
 * Removes what uploaders that no longer run left in the spool, each file named by the tag of the
 * process that made it (PROCESS_TAG: `<pid>.<hex>`):
 *  - read-ahead copies, `ahead/<tag>/<segment>`: an uploader SIGKILLed between its copy and the
 *    upload leaves up to a segment per parallel upload, and nothing else ever removes it
 *    (PostgreSQL's retry of that segment goes through the spool). `ahead/<pid>` and loose files
 *    are the layouts before the tag; they are never in use once an uploader holds the lock;
 *  - a marker's temporary file, `uploaded/<segment>.<tag>.tmp` (killed between writing and renaming it);
 *  - a staged lock, `uploader.pid.<tag>` (killed between staging it and removing the staged name;
 *    a hard link to the lock it became, if it did: removing the name leaves the lock as it is), and
 *    a lock moved aside to be judged, `uploader.pid.<tag>.stale` (removeStaleLock, killed inside);
 *  - a staged error report, `uploader.error.<tag>.<writer>.tmp` (reportUploaderError, killed
 *    between writing and renaming it; a live writer whose file goes loses only that report).
 * One with this process's pid is kept: an earlier process given the same pid, or another
 * namespace's, cannot be told from a live one. Another pid namespace's live uploader (whose pid is
 * not seen here) may lose its files: its copy in flight then fails as "archived meanwhile"
 * (skipped) or as an upload error (retried), never torn — an open file keeps its bytes when unlinked.
 */
async function removeDeadProcessFiles(spoolDir: string): Promise<void> {
  const deadTag = (tag: string) => {
    const pid = Number(tag.split('.')[0])
    return !(Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || processAlive(pid)))
  }

  const aheadDir = path.join(spoolDir, AHEAD_DIR)
  for (const entry of await fs.readdir(aheadDir).catch(() => [] as string[])) {
    if (deadTag(entry)) await fs.rm(path.join(aheadDir, entry), {recursive: true, force: true})
  }

  const uploadedDir = path.join(spoolDir, UPLOADED_DIR)
  for (const entry of await fs.readdir(uploadedDir).catch(() => [] as string[])) {
    const temporary = /^[0-9A-F]{24}\.(\d+\.[0-9a-f]+)\.tmp$/.exec(entry)
    if (temporary && deadTag(temporary[1])) await fs.rm(path.join(uploadedDir, entry), {force: true})
  }

  for (const entry of await fs.readdir(spoolDir).catch(() => [] as string[])) {
    const staged =
      (entry.startsWith(`${LOCK_FILE}.`) && /^(\d+\.[0-9a-f]+)(\.stale)?$/.exec(entry.slice(LOCK_FILE.length + 1))) ||
      (entry.startsWith(`${ERROR_FILE}.`) && /^(\d+\.[0-9a-f]+)\.[^.]+\.tmp$/.exec(entry.slice(ERROR_FILE.length + 1)))
    if (staged && deadTag(staged[1])) await fs.rm(path.join(spoolDir, entry), {force: true})
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }

    signal?.addEventListener('abort', done, {once: true})
  })
}
