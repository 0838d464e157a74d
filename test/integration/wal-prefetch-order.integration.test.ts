import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'
import type {Readable} from 'node:stream'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {ASK_FILE, WANTED_FILE} from '../../src/wal/foreground'
import {prefetch, queueWaiter} from '../../src/wal/prefetch'
import {tempDir} from '../helpers/cli'
import {waitFor} from '../helpers/wal'

/**
 * The prefetcher's order of work, on real local storage, in-process: what PostgreSQL waits for
 * first is done first. The segment recovery asks for next is downloaded alone (beside another it
 * takes twice as long), the last segment of the archive is queued a second time for the request
 * PostgreSQL makes for it at the end of recovery (once, from a copy), and a question of bin/dbb-wal wakes an
 * idle prefetcher instead of waiting for its next poll. Storage is observed (every read of an
 * object, when it starts and when its stream ends), never replaced.
 */
const SEGMENT_SIZE = 256 * 1024
const segment = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`

class ObservedStorage extends LocalBackend {
  readonly events: string[] = []

  override async get(key: string, options?: Parameters<LocalBackend['get']>[1]): Promise<Readable> {
    const stream = await super.get(key, options)
    const name = path.basename(key).replace(/\..*$/, '')
    this.events.push(`start ${name}`)
    stream.once('end', () => this.events.push(`end ${name}`))
    return stream
  }

  reads(name: string): number {
    return this.events.filter((event) => event === `start ${name}`).length
  }
}

describe('the prefetcher does first what PostgreSQL waits for', () => {
  let workDir: string
  let queueDir: string
  let storage: ObservedStorage
  const contents = new Map<number, Buffer>()

  beforeEach(async () => {
    workDir = await tempDir('dbb-prefetch-order-')
    queueDir = path.join(workDir, 'queue')
    await fs.mkdir(path.join(workDir, 'store', 'wal'), {recursive: true})
    storage = new ObservedStorage(path.join(workDir, 'store'))
  })

  afterEach(async () => {
    await fs.rm(workDir, {recursive: true, force: true})
  })

  async function archive(count: number): Promise<void> {
    for (let n = 1; n <= count; n++) {
      contents.set(n, randomBytes(SEGMENT_SIZE))
      await fs.writeFile(path.join(workDir, 'store', 'wal', `${segment(n)}.gz`), gzipSync(contents.get(n)!))
    }
  }

  /** What bin/dbb-wal does with a queued segment: renames it out, then says where recovery is. */
  async function deliver(n: number): Promise<Buffer> {
    const destination = path.join(workDir, `delivered-${n}-${Date.now()}`)
    await fs.rename(path.join(queueDir, segment(n)), destination)
    await fs.writeFile(path.join(queueDir, WANTED_FILE), `${segment(n)}\n`)
    return fs.readFile(destination)
  }

  const queued = (n: number) => existsSync(path.join(queueDir, segment(n)))

  it('downloads the segment recovery asks for next alone, before the read-ahead after it', async () => {
    await archive(6)
    const running = prefetch({storage, queueDir, name: segment(1), count: 4, segmentSize: SEGMENT_SIZE, idleExitMs: 2000})
    await waitFor('segments 2 to 5 queued', async () => ([2, 3, 4, 5].every(queued) ? true : undefined))
    await running
    // Segment 2 was read to its end before any other read began; the rest two at a time.
    expect(storage.events.slice(0, 2)).toEqual([`start ${segment(2)}`, `end ${segment(2)}`])
    expect(new Set(storage.events.slice(2, 4))).toEqual(new Set([`start ${segment(3)}`, `start ${segment(4)}`]))
  }, 60_000)

  it('does not download again a segment handed over before recovery said it moved on (bin/dbb-wal renames it out, then writes `wanted`)', async () => {
    await archive(6)
    const running = prefetch({storage, queueDir, name: segment(1), count: 4, segmentSize: SEGMENT_SIZE, idleExitMs: 1500})
    await waitFor('segments 2 to 5 queued', async () => ([2, 3, 4, 5].every(queued) ? true : undefined))
    // The rename alone (it wakes the prefetcher): the window still starts at 2, and 2 is missing.
    await fs.rename(path.join(queueDir, segment(2)), path.join(workDir, 'handed-over'))
    await new Promise((resolve) => setTimeout(resolve, 300))
    await fs.writeFile(path.join(queueDir, WANTED_FILE), `${segment(2)}\n`)
    await waitFor('segment 6 queued', async () => (queued(6) ? true : undefined))
    await running
    expect(storage.reads(segment(2))).toBe(1)
  }, 60_000)

  it('queues the last segment again at the end of the archive, once, with the exact bytes, from a copy made while it was queued', async () => {
    await archive(3)
    const running = prefetch({storage, queueDir, name: segment(1), count: 4, segmentSize: SEGMENT_SIZE, idleExitMs: 4000})
    await waitFor('segments 2 and 3 queued', async () => (queued(2) && queued(3) ? true : undefined))
    // The end of the archive is in sight (4 is absent): a copy of 3 is kept while 3 is queued. (Taken
    // before the copy exists, 3 is downloaded again instead: the fallback, not tested here.)
    await waitFor('the copy of segment 3', async () => (existsSync(path.join(queueDir, `${segment(3)}.again`)) ? true : undefined))
    expect((await deliver(2)).equals(contents.get(2)!)).toBe(true)
    expect((await deliver(3)).equals(contents.get(3)!)).toBe(true)
    // Recovery reached the last segment and the one after it is absent: PostgreSQL will ask for 3 again.
    await waitFor('segment 3 queued again', async () => (queued(3) ? true : undefined))
    expect((await deliver(3)).equals(contents.get(3)!)).toBe(true)
    // Asked for again (the same `wanted`), it is not queued a third time while the prefetcher runs
    // on to its idle exit (asking again past the end every second: a standby's archive grows). The
    // second copy came from the first (read from storage once), and nothing is left behind.
    await running
    expect(queued(3)).toBe(false)
    expect(storage.reads(segment(3))).toBe(1)
    expect((await fs.readdir(queueDir)).filter((entry) => entry.startsWith('0000'))).toEqual([])
  }, 60_000)

  it('keeps the copy of the last segment while recovery is behind it, past the prefetcher looking again for the end of the archive', async () => {
    await archive(3)
    const running = prefetch({storage, queueDir, name: segment(1), count: 4, segmentSize: SEGMENT_SIZE, idleExitMs: 6000})
    await waitFor('the copy of segment 3', async () => (existsSync(path.join(queueDir, `${segment(3)}.again`)) ? true : undefined))
    // Recovery is slow (a big segment to replay): the prefetcher looks for segment 4 again after a
    // second (a standby's archive grows) and, for that look, does not know where the end is.
    await new Promise((resolve) => setTimeout(resolve, 2500))
    expect(existsSync(path.join(queueDir, `${segment(3)}.again`))).toBe(true)
    expect((await deliver(2)).equals(contents.get(2)!)).toBe(true)
    expect((await deliver(3)).equals(contents.get(3)!)).toBe(true)
    await waitFor('segment 3 queued again', async () => (queued(3) ? true : undefined))
    expect((await deliver(3)).equals(contents.get(3)!)).toBe(true)
    await running
    // Read from storage once: the second time came from the copy, not a download.
    expect(storage.reads(segment(3))).toBe(1)
    expect((await fs.readdir(queueDir)).filter((entry) => entry.startsWith('0000'))).toEqual([])
  }, 60_000)

  it('never queues again a spare copy an earlier prefetcher left: the end of the archive gets storage\'s bytes', async () => {
    await archive(3)
    // A killed prefetcher's copy of segment 3, of an archive since wiped and reused under the same
    // settings; this prefetcher starts when recovery is already at 3, the last segment.
    await fs.mkdir(queueDir, {recursive: true})
    await fs.writeFile(path.join(queueDir, `${segment(3)}.again`), randomBytes(SEGMENT_SIZE))
    const running = prefetch({storage, queueDir, name: segment(3), count: 4, segmentSize: SEGMENT_SIZE, idleExitMs: 2000})
    await waitFor('segment 3 queued again', async () => (queued(3) ? true : undefined))
    expect((await deliver(3)).equals(contents.get(3)!)).toBe(true)
    await running
    expect(storage.reads(segment(3))).toBe(1)
  }, 60_000)

  it("ignores an earlier replay's `wanted` (older than a prefetcher waits idle): this recovery's window is downloaded, not that one's", async () => {
    await archive(9)
    await fs.mkdir(queueDir, {recursive: true})
    await fs.writeFile(path.join(queueDir, WANTED_FILE), `${segment(6)} ${SEGMENT_SIZE}\n`)
    const anHourAgo = new Date(Date.now() - 3_600_000)
    await fs.utimes(path.join(queueDir, WANTED_FILE), anHourAgo, anHourAgo)
    const running = prefetch({storage, queueDir, name: segment(1), count: 2, segmentSize: SEGMENT_SIZE, idleExitMs: 1000})
    await waitFor('segments 2 and 3 queued', async () => (queued(2) && queued(3) ? true : undefined))
    await running
    expect(storage.events[0]).toBe(`start ${segment(2)}`)
    expect(storage.reads(segment(7))).toBe(0)
  }, 60_000)

  it('started before the segment size is known (the .history probe), it downloads nothing until `wanted` gives it, then only the window after it', async () => {
    await archive(4)
    // As the first fetch of a recovery starts it: the requested name, no size, no backup_label here.
    const running = prefetch({storage, queueDir, name: segment(1), count: 2, segmentSize: 0, idleExitMs: 2000})
    await waitFor('the prefetcher to hold the queue', async () => (existsSync(path.join(queueDir, 'uploader.pid')) ? true : undefined))
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(storage.events).toEqual([])
    // The fetch that started it downloaded segment 1 itself and now says where recovery is.
    await fs.writeFile(path.join(queueDir, WANTED_FILE), `${segment(1)} ${SEGMENT_SIZE}\n`)
    await waitFor('segments 2 and 3 queued', async () => (queued(2) && queued(3) ? true : undefined))
    await running
    expect(storage.reads(segment(1))).toBe(0)
    expect(queued(1)).toBe(false)
  }, 60_000)

  it('an idle prefetcher wakes when bin/dbb-wal writes a question or where recovery is', async () => {
    await fs.mkdir(queueDir)
    // A poll this long would fail the test by jest's timeout: only the write can end these waits.
    for (const file of [ASK_FILE, WANTED_FILE]) {
      const waiter = queueWaiter(queueDir, 3_600_000)
      try {
        const woken = waiter.wait()
        await new Promise((resolve) => setTimeout(resolve, 50))
        await fs.writeFile(path.join(queueDir, file), `${segment(2)}\n`)
        await woken
      } finally {
        waiter.close()
      }
    }
  }, 30_000)
})
