import {FSWatcher, createWriteStream, readdirSync, watch} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {pipeline} from 'node:stream/promises'

import {NotFoundError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {fetchWal} from './archive'
import {createTrackedTemporaryFile, temporaryFileFor} from './fetch-exit'
import {ANSWER_FILE, ASK_FILE, IDENTITY_FILE, PREFETCH_PID_FILE, WANTED_FILE, identityFileText, identityLine, prefetchLogFor, uploaderLock} from './foreground'
import {copyFileWhole} from '../sync-directory'
import {isThisProcess, lockSpool} from './spool'
import {isWalFileName, walFileKind} from './segments'
import {spawnDetachedDbb} from '../backup/child-process'

/**
 * `wal fetch` prefetch (pgBackRest's archive-get queue): when PostgreSQL asks for segment N, a
 * detached `dbb wal prefetch N <segment size>` downloads N+1 … N+k into a local queue, so the next
 * restore_command calls are a rename (src/wal/foreground.ts, which loads nothing else) instead of a
 * download, and replay is not download-bound.
 *
 * One prefetcher per queue (a pid file), long-lived: every fetch writes the segment recovery asked
 * for into `<queue>/wanted`, and the prefetcher keeps the window after it filled, dropping what
 * falls behind; it exits after WANTED_IDLE_EXIT_MS without a new request. So a replay of thousands
 * of segments starts one prefetcher, not one per segment.
 *
 * A queued file is complete and verified: it is written by the same fetch as restore_command
 * (decompressed, the gzip trailer's CRC and length checked, temp file renamed only when whole).
 * A segment that fails to download (damaged, storage error) is simply not queued: PostgreSQL's
 * own request for it then goes to storage and gets the real answer (exit 200 for a damaged copy),
 * while the segments before it are served as usual. Queue entries are keyed by the full file name,
 * which holds the timeline, and the queue lives in a directory named after the storage settings
 * (storageIdentity), so a file from another timeline, or another archive, is never served.
 */

export {queueDirFor} from './foreground'

/** The prefetcher exits when recovery asked for nothing new this long. */
const WANTED_IDLE_EXIT_MS = 10_000
/** How often it looks at `wanted`; also how long it waits before asking again past the end of the archive. */
const POLL_MS = 20
const END_OF_ARCHIVE_RETRY_MS = 1000
/** A copy of the archive's last segment, for PostgreSQL's second request for it at the end of recovery. */
const SPARE_SUFFIX = '.again'

/**
 * Waits up to `pollMs`, or less: until bin/dbb-wal writes a question (ASK_FILE) or where recovery is
 * (WANTED_FILE) in `queueDir`. PostgreSQL waits for those answers (a question is an unqueued file,
 * asked at the start and at the end of every recovery), and a poll alone added half a period to
 * each. Where the directory cannot be watched, it is a poll.
 */
export function queueWaiter(queueDir: string, pollMs = POLL_MS): {wait: () => Promise<void>; close: () => void} {
  let wake: (() => void) | undefined
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(queueDir, (_event, file) => {
      if (file === ASK_FILE || file === WANTED_FILE) wake?.()
    })
    watcher.on('error', () => watcher?.close())
  } catch {
    // No inotify here: polling only.
  }

  return {
    wait: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => wake?.(), pollMs)
        wake = () => {
          wake = undefined
          clearTimeout(timer)
          resolve()
        }
      }),
    close: () => watcher?.close(),
  }
}

/** The `count` segment names after `name` on its timeline, for segments of `segmentSize` bytes. */
export function nextSegmentNames(name: string, count: number, segmentSize: number): string[] {
  // Size 0: a prefetcher started before the first download, not told the size yet.
  if (walFileKind(name) !== 'segment' || segmentSize <= 0) return []
  const perLog = 0x1_0000_0000n / BigInt(segmentSize)
  const timeline = name.slice(0, 8)
  let number = BigInt(`0x${name.slice(8, 16)}`) * perLog + BigInt(`0x${name.slice(16, 24)}`)
  const names: string[] = []
  for (let index = 0; index < count; index++) {
    number += 1n
    names.push(`${timeline}${[number / perLog, number % perLog].map((part) => part.toString(16).toUpperCase().padStart(8, '0')).join('')}`)
  }

  return names
}

/** The niceness of a prefetcher (0 is normal priority, 19 the lowest). */
export const PREFETCH_NICENESS = 10

/**
 * Lowers the priority of this process (a prefetcher) below PostgreSQL's. Replay is one process,
 * the startup process, on one core; the prefetcher decompresses on the others. On a 2-core machine,
 * at equal priority, its threads compete with the startup process for CPU; niced, it gets what
 * replay leaves (BENCHMARKS.md, "Session 7: replay", has what replay costs with it). On Linux a
 * niceness is per thread (new threads inherit it), so every thread
 * of the process is lowered; where /proc is missing, the call is per process.
 */
export function yieldToRecovery(): void {
  let threads = ['0']
  try {
    threads = readdirSync('/proc/self/task')
  } catch {
    // Not Linux: setpriority(0) lowers the whole process.
  }

  for (const thread of threads) {
    try {
      os.setPriority(Number(thread), PREFETCH_NICENESS)
    } catch {
      // A thread that ended meanwhile; lowering one's own priority needs no privilege.
    }
  }
}

/** Hands a queued file to PostgreSQL under `destination`; false when it is not queued. */
export async function takeQueued(queueDir: string, name: string, destination: string): Promise<boolean> {
  const queued = path.join(queueDir, name)
  try {
    await fs.rename(queued, destination)
    return true
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return false
    if (code !== 'EXDEV') throw error
  }

  // The queue is on another filesystem than pg_wal (a spool on tmpfs, pg_wal on a volume): rename
  // says EXDEV before it looks for the file, so absence is learnt here, from the open. Then copy,
  // and publish complete. The copy is this process's own tracked file (fetch-exit.ts), so a fatal
  // exit mid-copy leaves nothing in pg_wal.
  const source = await fs.open(queued).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (!source) return false
  const partial = temporaryFileFor(destination, 'queued')
  let temporary: {fd: number; untrack: () => void} | undefined
  try {
    temporary = createTrackedTemporaryFile(partial)
    await pipeline(source.createReadStream(), createWriteStream(partial, {fd: temporary.fd}))
    await fs.rename(partial, destination)
  } catch (error) {
    await source.close().catch(() => {})
    await fs.rm(partial, {force: true})
    throw error
  } finally {
    temporary?.untrack()
  }

  await fs.rm(queued, {force: true})
  return true
}

/** Starts a detached prefetcher for the segments after `name` (the caller checked none runs). */
export function startPrefetcher(cliEntry: string, spoolDir: string, name: string, segmentSize: number): void {
  spawnDetachedDbb(cliEntry, ['wal', 'prefetch', name, String(segmentSize)], prefetchLogFor(spoolDir))
}

/**
 * `<name> <segment size>` (Node) or `<name>` (bin/dbb-wal, which writes it in place: a half-written
 * or empty file reads as no news); a name alone keeps the size recovery has used so far.
 */
async function readWanted(queueDir: string, currentSegmentSize?: number): Promise<{name: string; segmentSize: number} | undefined> {
  const text = await fs.readFile(path.join(queueDir, WANTED_FILE), 'utf8').catch(() => '')
  const [name, size] = text.trim().split(' ')
  const segmentSize = size === undefined ? (currentSegmentSize ?? Number.NaN) : Number(size)
  return walFileKind(name ?? '') === 'segment' && Number.isInteger(segmentSize) && segmentSize > 0 ? {name, segmentSize} : undefined
}

/**
 * The first segment a base-backup restore replays, from `backup_label` in the working directory
 * (PostgreSQL runs restore_command in the data directory, and the prefetcher inherits it): its
 * `START WAL LOCATION: … (file <name>)` line. Undefined when there is none (not a base-backup
 * restore, or PostgreSQL already read and renamed it).
 */
export async function firstSegmentOfBackupLabel(directory = process.cwd()): Promise<string | undefined> {
  const label = await fs.readFile(path.join(directory, 'backup_label'), 'utf8').catch(() => '')
  const name = /^START WAL LOCATION: .*\(file ([0-9A-F]{24})\)$/m.exec(label)?.[1]
  return name !== undefined && walFileKind(name) === 'segment' ? name : undefined
}

/** A question of bin/dbb-wal: `<nonce> <name>` for a segment or timeline history file. */
async function readAsk(queueDir: string): Promise<{nonce: string; name: string} | undefined> {
  const text = await fs.readFile(path.join(queueDir, ASK_FILE), 'utf8').catch(() => '')
  const [nonce, name, ...rest] = text.trim().split(' ')
  const kind = walFileKind(name ?? '')
  return rest.length === 0 && /^[0-9.]{1,64}$/.test(nonce) && (kind === 'segment' || kind === 'history') ? {nonce, name} : undefined
}

/**
 * Answers bin/dbb-wal's question about `name` with what storage says NOW — the request is made
 * after the question was read, so an "absent" is storage's answer to this very request of
 * PostgreSQL, never an older probe (a standby's archive grows). Only a positive "no such object"
 * (NotFoundError, the same rule as `wal fetch`) is "absent"; any other failure is "failed", and the
 * asking fetch then goes to Node, which asks storage again and exits 200 if it fails again.
 */
async function answerAsk(
  storage: StorageBackend,
  queueDir: string,
  ask: {nonce: string; name: string},
  downloading: Map<string, Promise<void>>,
  logger?: Logger,
): Promise<'queued' | 'absent' | 'failed'> {
  const queued = path.join(queueDir, ask.name)
  let outcome: 'queued' | 'absent' | 'failed' = 'queued'
  // The read-ahead is downloading it: its result is the answer (one download of a name at a time).
  await downloading.get(ask.name)
  const present = await fs.access(queued).then(
    () => true,
    () => false,
  )
  if (!present) {
    try {
      await fetchWal(storage, ask.name, queued)
    } catch (error) {
      outcome = error instanceof NotFoundError ? 'absent' : 'failed'
      if (outcome === 'failed') logger?.warn({event: 'wal.prefetch_failed', wal: ask.name, error: errorMessage(error)}, `fetching ${ask.name} asked for by dbb-wal failed`)
    }
  }

  const answer = path.join(queueDir, ANSWER_FILE)
  await fs.writeFile(`${answer}.tmp`, `${ask.nonce} ${ask.name} ${outcome}\n`)
  await fs.rename(`${answer}.tmp`, answer)
  return outcome
}

/**
 * The prefetcher: keeps the `count` segments after the one recovery asked for last queued,
 * downloading two at a time; drops queue entries outside that window (consumed or stale); stops
 * asking past the end of the archive until recovery moves on (or a second passed: a standby's
 * archive grows); exits when recovery has asked for nothing new for a while.
 */
export async function prefetch(options: {
  storage: StorageBackend
  queueDir: string
  /** storageIdentity of the queue's archive, published for bin/dbb-wal (IDENTITY_FILE). */
  identity?: string
  name: string
  count: number
  segmentSize: number
  logger?: Logger
  idleExitMs?: number
}): Promise<{fetched: number}> {
  const {storage, queueDir, logger} = options
  await fs.mkdir(queueDir, {recursive: true, mode: 0o700})
  const lock = await lockSpool(queueDir)
  if (!lock) return {fetched: 0}
  // Trust nothing an earlier prefetcher left (a killed one's partial downloads; entries of a replay
  // long over; a hard link an older bin/dbb-wal left between its `ln` and `rm`, which can share its
  // inode with a file PostgreSQL recycles and overwrites; a spare copy of the last segment, which
  // would be queued again as is at the end of the archive). Entries are cheap to download again.
  for (const entry of await fs.readdir(queueDir)) {
    if (isWalFileName(entry) || entry.endsWith('.dbb-partial') || entry.endsWith(SPARE_SUFFIX)) await fs.rm(path.join(queueDir, entry), {force: true})
  }

  // Published only now, under this prefetcher's lock: until then the identity file names the
  // previous holder and nothing is served from the queue (queueServed, bin/dbb-wal's fetch_queued).
  const line = options.identity === undefined ? undefined : identityLine(options.identity)
  // Pid and start time: another namespace's prefetcher on this queue can have the same pid.
  const held = uploaderLock(queueDir)
  if (isThisProcess(held)) {
    await fs.writeFile(path.join(queueDir, `${IDENTITY_FILE}.tmp`), identityFileText(line, held))
    await fs.rename(path.join(queueDir, `${IDENTITY_FILE}.tmp`), path.join(queueDir, IDENTITY_FILE))
  }

  // A `wanted` older than a prefetcher waits idle is an earlier replay's (the queue directory
  // outlives it: the next drill, the next restore with the same spool). Read, its window would be
  // downloaded first, and the first segment this recovery asks for (backup_label's) not at all.
  const wantedFile = path.join(queueDir, WANTED_FILE)
  const wantedAgeMs = await fs.stat(wantedFile).then(
    (stat) => Date.now() - stat.mtimeMs,
    () => 0,
  )
  if (wantedAgeMs > WANTED_IDLE_EXIT_MS) await fs.rm(wantedFile, {force: true})
  let fetched = 0
  let wanted = (await readWanted(queueDir, options.segmentSize)) ?? {name: options.name, segmentSize: options.segmentSize}
  // Started on recovery's first request, the .history probe, before any segment gave the size: the
  // first segment is downloaded at once when backup_label names it, so it is queued by the time
  // PostgreSQL asks for it (instead of downloaded then) and the read-ahead starts from its size.
  let head = wanted.segmentSize === 0 ? await firstSegmentOfBackupLabel() : undefined
  let lastRequestAt = Date.now()
  /** Names the read-ahead is downloading now; a question about one waits for it. */
  const downloading = new Map<string, Promise<void>>()
  // Per window: names that failed (not retried until recovery moves on) and the end of the archive.
  const failed = new Set<string>()
  let endOfArchive: {name: string; at: number} | undefined
  let answered: string | undefined
  /** The last segment whose spare copy was made, and the last one queued again from it (once each: see below). */
  let spared: string | undefined
  let requeued: string | undefined
  /**
   * Names this prefetcher queued. One gone from the queue was handed over: bin/dbb-wal renames it
   * out, THEN writes `wanted`, and a pass in between saw it missing from a window that still starts
   * before it — and downloaded it again. If recovery does ask for it again (a new replay while this
   * prefetcher still runs), its question is answered like any other.
   */
  const queuedHere = new Set<string>()
  const waiter = queueWaiter(queueDir)
  try {
    // A fetch waiting on an answer (bin/dbb-wal) goes before the read-ahead: looked at before each
    // window and after each download in it.
    const answerPendingAsk = async () => {
      const ask = await readAsk(queueDir)
      if (ask && ask.nonce !== answered) {
        answered = ask.nonce
        const outcome = await answerAsk(storage, queueDir, ask, downloading, logger)
        if (outcome === 'queued') queuedHere.add(ask.name)
        // Started on a .history request (size 0): the first segment asked for gives the size, and the window.
        if (outcome === 'queued' && wanted.segmentSize === 0 && walFileKind(ask.name) === 'segment') {
          const size = (await fs.stat(path.join(queueDir, ask.name)).catch(() => undefined))?.size
          if (size) {
            wanted = {name: ask.name, segmentSize: size}
            lastRequestAt = Date.now()
          }
        }
      }

      return ask
    }

    /** Downloads `name` into the queue; a question about it meanwhile waits for this download. */
    const download = async (name: string) => {
      const done = fetchWal(storage, name, path.join(queueDir, name)).then(() => undefined)
      downloading.set(name, done.catch(() => undefined))
      await done.finally(() => downloading.delete(name))
      queuedHere.add(name)
      fetched += 1
    }

    while (Date.now() - lastRequestAt < (options.idleExitMs ?? WANTED_IDLE_EXIT_MS)) {
      if (lock.lost()) {
        // Two prefetchers would each remove the other's queue entries as outside their window.
        logger?.warn({event: 'wal.prefetch_lock_lost', queueDir}, `another prefetcher holds ${queueDir} now; this one stops`)
        break
      }

      // The first segment downloads while the question that started this prefetcher (the .history
      // probe) is answered beside it: PostgreSQL asks for that segment right after the answer.
      const first = wanted.segmentSize === 0 ? head : undefined
      head = undefined
      const headQueued =
        first === undefined
          ? undefined
          : download(first).then(
              () => first,
              // Not queued: PostgreSQL's own request for it gets storage's answer, as for any segment.
              () => undefined,
            )
      const ask = await answerPendingAsk()
      if (headQueued !== undefined) {
        const name = await headQueued
        const size = name === undefined ? 0 : ((await fs.stat(path.join(queueDir, name)).catch(() => undefined))?.size ?? 0)
        if (name !== undefined && wanted.segmentSize === 0 && size > 0) wanted = {name, segmentSize: size}
        continue
      }

      const window = nextSegmentNames(wanted.name, options.count, wanted.segmentSize)
      if (endOfArchive && Date.now() - endOfArchive.at > END_OF_ARCHIVE_RETRY_MS) endOfArchive = undefined
      // The archive's last segment, when its end is in sight: the one before the first absent.
      const sequence = [wanted.name, ...window]
      const endIndex = endOfArchive ? sequence.indexOf(endOfArchive.name) : -1
      const last = endIndex > 0 ? sequence[endIndex - 1] : undefined
      // `wanted` itself too: queued ahead from backup_label, it is the one PostgreSQL asks for next.
      // The spare copy (below) is kept until recovery has passed it, also while the end of the
      // archive is looked for again (`last` unknown for that look): it is made once per segment.
      const spares = [wanted.name, ...[last, spared].filter((name): name is string => name !== undefined && name >= wanted.name)]
      const keep = new Set([...window, wanted.name, ...(ask ? [ask.name] : []), ...spares.map((name) => `${name}${SPARE_SUFFIX}`)])
      // A `.dbb-partial` of a name not being downloaded is a killed prefetcher's leftover: removed too.
      // Kept: the lock and another process's staged copy of it (`uploader.pid.<pid>.<tag>`, src/wal/spool.ts lockSpool).
      const entries = await fs.readdir(queueDir)
      const inFlight = [...downloading.keys()]
      for (const entry of entries) {
        if (entry.startsWith(PREFETCH_PID_FILE) || entry === IDENTITY_FILE || entry.startsWith(WANTED_FILE) || keep.has(entry)) continue
        if (inFlight.some((name) => entry.startsWith(`${name}.`))) continue
        await fs.rm(path.join(queueDir, entry), {force: true})
      }

      const present = new Set(entries)
      const missing = window.filter((name) => !present.has(name) && !failed.has(name) && !queuedHere.has(name) && !(endOfArchive && name >= endOfArchive.name))
      const worker = async (limit = Number.POSITIVE_INFINITY) => {
        for (let taken = 0; taken < limit; taken++) {
          const name = missing.shift()
          if (name === undefined || (endOfArchive && name >= endOfArchive.name)) return
          try {
            await download(name)
          } catch (error) {
            if (error instanceof NotFoundError) {
              if (!endOfArchive || name < endOfArchive.name) endOfArchive = {name, at: Date.now()}
              return
            }

            // Not queued: PostgreSQL's own request for it will get storage's answer.
            failed.add(name)
            logger?.warn({event: 'wal.prefetch_failed', wal: name, error: errorMessage(error)}, `prefetching ${name} failed`)
          }

          await answerPendingAsk()
        }
      }

      // At the end of the archive recovery ends, and PostgreSQL then reads the last segment once
      // more, through restore_command (PostgreSQL 15: the end-of-log record; BENCHMARKS.md,
      // "Session 13: replay"). While it is still queued, a copy of it is kept (whole, fsynced, under
      // another name, never a link: PostgreSQL recycles the file it is handed); once recovery asked
      // for it (`wanted`), the copy takes its place — once — so the second request is a rename, not
      // a download while PostgreSQL waits to finish recovery. Without a copy (a prefetcher that came
      // late), it is downloaded again, in the background: a question about the absent segment after
      // it is answered meanwhile, one about this one waits for the download (`downloading`).
      if (last !== undefined && last !== wanted.name && present.has(last) && spared !== last) {
        spared = last
        const spare = path.join(queueDir, `${last}${SPARE_SUFFIX}`)
        await copyFileWhole(path.join(queueDir, last), temporaryFileFor(spare, 'copy'), spare).catch(() => {})
      }

      // (A window is empty while the segment size is not known yet: no end of the archive then.)
      if (endOfArchive !== undefined && endOfArchive.name === window[0] && requeued !== wanted.name && !failed.has(wanted.name)) {
        requeued = wanted.name
        if (!present.has(wanted.name)) {
          const spare = path.join(queueDir, `${wanted.name}${SPARE_SUFFIX}`)
          if (!(await fs.rename(spare, path.join(queueDir, wanted.name)).then(() => true, () => false))) void download(wanted.name).catch(() => {})
        }
      }

      if (missing.length > 0) {
        // The segment recovery asks for next goes alone: beside another download it takes twice as
        // long on two cores, and PostgreSQL is waiting for it (the start of a replay, or a queue
        // that fell behind). The rest two at a time.
        if (missing[0] === window[0]) await worker(1)
        await Promise.all([worker(), worker()])
      } else await waiter.wait()
      const next = await readWanted(queueDir, wanted.segmentSize)
      if (next && (next.name !== wanted.name || next.segmentSize !== wanted.segmentSize)) {
        // Back (another recovery): what was handed over before is wanted again. Forward: names up
        // to `wanted` are behind every window from now on (and a standby's replay runs for weeks).
        if (next.name < wanted.name) queuedHere.clear()
        for (const name of queuedHere) if (name <= next.name) queuedHere.delete(name)
        wanted = next
        lastRequestAt = Date.now()
        failed.clear()
      }
    }
  } finally {
    // A background download (the end of the archive's) ends before the queue is let go.
    await Promise.all(downloading.values())
    waiter.close()
    await lock.release()
  }

  // In WAL_SPOOL_DIR/prefetch.log (startPrefetcher): one line per run that held the queue.
  logger?.info({event: 'wal.prefetch_done', queueDir, fetched}, `prefetcher of ${queueDir} exits, having downloaded ${fetched} files ahead of recovery`)
  return {fetched}
}
