import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {NotFoundError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {fetchWal} from './archive'
import {lockSpool} from './spool'
import {walFileKind} from './segments'
import {spawnDetachedDbb} from '../backup/child-process'

/**
 * `wal fetch` prefetch (pgBackRest's archive-get queue): when PostgreSQL asks for segment N, a
 * detached `dbb wal prefetch N <segment size>` downloads N+1 … N+k into a local queue, so the next
 * restore_command calls are a rename instead of a download and replay is not download-bound.
 *
 * A queued file is complete and verified: it is written by the same fetch as restore_command
 * (decompressed, the gzip trailer's CRC and length checked, temp file renamed only when whole).
 * A segment that fails to download (damaged, storage error) is simply not queued: PostgreSQL's
 * own request for it then goes to storage and gets the real answer (exit 200 for a damaged copy),
 * while the segments before it are served as usual. Queue entries are keyed by the full file name,
 * which holds the timeline, and the queue lives in a directory named after the storage location,
 * so a file from another timeline, or another archive, is never served.
 */

const PID_FILE = 'uploader.pid'

/** The queue directory for one archive: `<WAL_SPOOL_DIR>/fetch-queue/<hash of the storage location>`. */
export function queueDirFor(spoolDir: string, storageLocation: string): string {
  return path.join(spoolDir, 'fetch-queue', createHash('sha256').update(storageLocation).digest('hex').slice(0, 16))
}

/** The `count` segment names after `name` on its timeline, for segments of `segmentSize` bytes. */
export function nextSegmentNames(name: string, count: number, segmentSize: number): string[] {
  if (walFileKind(name) !== 'segment') return []
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

  // The queue is on another filesystem than pg_wal: copy, then publish complete.
  const partial = `${destination}.dbb-partial`
  await fs.copyFile(queued, partial)
  await fs.rename(partial, destination)
  await fs.rm(queued, {force: true})
  return true
}

/** Starts a detached prefetcher for the segments after `name`, unless one runs for this queue. */
export async function startPrefetcher(cliEntry: string, name: string, segmentSize: number): Promise<void> {
  spawnDetachedDbb(cliEntry, ['wal', 'prefetch', name, String(segmentSize)])
}

/**
 * The prefetcher: drops queue entries outside the window after `name` (consumed or stale), then
 * downloads the missing ones, two at a time, stopping at the end of the archive.
 */
export async function prefetch(options: {
  storage: StorageBackend
  queueDir: string
  name: string
  count: number
  segmentSize: number
  logger?: Logger
}): Promise<{fetched: number}> {
  const {storage, queueDir, logger} = options
  await fs.mkdir(queueDir, {recursive: true, mode: 0o700})
  const release = await lockSpool(queueDir)
  if (!release) return {fetched: 0}
  let fetched = 0
  try {
    const wanted = nextSegmentNames(options.name, options.count, options.segmentSize)
    const keep = new Set(wanted)
    for (const entry of await fs.readdir(queueDir)) {
      if (entry !== PID_FILE && !keep.has(entry)) await fs.rm(path.join(queueDir, entry), {force: true})
    }

    const present = new Set(await fs.readdir(queueDir))
    const missing = wanted.filter((name) => !present.has(name))
    let endOfArchive = false
    const worker = async () => {
      while (!endOfArchive) {
        const name = missing.shift()
        if (name === undefined) return
        try {
          await fetchWal(storage, name, path.join(queueDir, name))
          fetched += 1
        } catch (error) {
          if (error instanceof NotFoundError) {
            endOfArchive = true
            return
          }

          // Not queued: PostgreSQL's own request for it will get storage's answer.
          logger?.warn({event: 'wal.prefetch_failed', wal: name, error: errorMessage(error)}, `prefetching ${name} failed`)
        }
      }
    }

    await Promise.all([worker(), worker()])
  } finally {
    await release()
  }

  return {fetched}
}
