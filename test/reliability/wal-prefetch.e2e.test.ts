import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {identityLine, queueDirFor, queueServed, storageIdentity, uploaderLock} from '../../src/wal/foreground'
import {runCli, tempDir} from '../helpers/cli'
import {stopPrefetchers, waitFor, writeStandInSegments} from '../helpers/wal'

/**
 * wal fetch prefetch, with the real CLI and the real detached prefetcher on real local storage:
 * later segments are queued verified, served by rename (or a copy, across filesystems), a damaged one is never queued (PostgreSQL's
 * own request for it exits 200) and does not disturb the others, and the queue of another archive
 * is never served.
 */
// The spool beside pg_wal (a queued segment is renamed in), and on a tmpfs, another filesystem
// (copied in; a segment that is not queued must still be fetched from storage, never an error).
describe.each([
  ['beside pg_wal', undefined],
  ['on a tmpfs', '/dev/shm'],
])('wal fetch prefetch, spool %s', (_where, spoolParent) => {
  let workDir: string
  let storeDir: string
  let spoolDir: string
  let contents: Map<number, Buffer>
  const name = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`
  const env = () => ({BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir, WAL_PREFETCH: '8'})
  const fetch = (n: number, dest: string) => runCli(['wal', 'fetch', name(n), dest], env(), {cwd: workDir})

  beforeAll(async () => {
    workDir = await tempDir('dbb-prefetch-')
    storeDir = path.join(workDir, 'store')
    spoolDir = spoolParent ? await fs.mkdtemp(path.join(spoolParent, 'dbb-prefetch-spool-')) : path.join(workDir, 'spool')
    if (spoolParent) expect((await fs.stat(spoolDir)).dev).not.toBe((await fs.stat(workDir)).dev)
    await fs.mkdir(storeDir)
    await fs.mkdir(path.join(workDir, 'pg_wal'))
    // 1 MiB "segments": the prefetcher learns the segment size from the file PostgreSQL asked for.
    contents = await writeStandInSegments(path.join(workDir, 'pg_wal'), 5, name)
    for (let n = 1; n <= 5; n++) expect((await runCli(['wal', 'push', `pg_wal/${name(n)}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})).code).toBe(0)

    // Segment 4 damaged in storage: its gzip data garbled after the header.
    const damaged = path.join(storeDir, 'wal', `${name(4)}.gz`)
    const bytes = await fs.readFile(damaged)
    bytes.fill(0x55, 20, 400)
    await fs.writeFile(damaged, bytes)
  })

  afterAll(async () => {
    await stopPrefetchers(spoolDir)
    await fs.rm(workDir, {recursive: true, force: true})
    await fs.rm(spoolDir, {recursive: true, force: true})
  })

  it('queues the following segments verified, serves them, and a damaged one exits 200 without breaking the others', async () => {
    const queueDir = queueDirFor(spoolDir, storageIdentity({BACKUP_LOCAL_DIR: storeDir}))
    // Left by an earlier prefetcher (say, a hard link whose pg_wal file PostgreSQL since recycled and
    // overwrote): a new prefetcher trusts nothing it did not download, so this is never served.
    await fs.mkdir(queueDir, {recursive: true})
    await fs.writeFile(path.join(queueDir, name(2)), randomBytes(1024 * 1024))
    const first = await fetch(1, 'pg_wal/RECOVERYXLOG')
    expect(first.code).toBe(0)
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(contents.get(1)!)).toBe(true)
    await waitFor(
      'the prefetcher to queue 2, 3 and 5',
      async () => {
        const entries = (await fs.readdir(queueDir).catch(() => [] as string[])).filter((entry) => /^[0-9A-F]{24}$/.test(entry)).sort()
        return entries.join(',') === [name(2), name(3), name(5)].join(',') ? true : undefined
      },
      60_000,
    )

    // Started before the first download (size 0), it learned the 1 MiB size from `wanted`, and published its archive for bin/dbb-wal.
    // Published under its own lock (pid and start time as the lock file records them), so the queue is served.
    const holder = uploaderLock(queueDir)!
    expect(await fs.readFile(path.join(queueDir, 'identity'), 'utf8')).toBe(`${identityLine(storageIdentity({BACKUP_LOCAL_DIR: storeDir}))}\n${holder.pid} ${holder.startTime}\n`)
    expect(queueServed(queueDir)).toBe(true)

    for (const n of [2, 3]) {
      const result = await fetch(n, `pg_wal/RECOVERYXLOG${n}`)
      expect(result.code).toBe(0)
      expect((await fs.readFile(path.join(workDir, 'pg_wal', `RECOVERYXLOG${n}`))).equals(contents.get(n)!)).toBe(true)
    }

    const damaged = await fetch(4, 'pg_wal/RECOVERYXLOG4')
    expect(damaged.code).toBe(200)
    expect(damaged.stderr).toMatch(/damaged/)
    await expect(fs.stat(path.join(workDir, 'pg_wal', 'RECOVERYXLOG4'))).rejects.toThrow()
    // The prefetcher's own failure to queue 4 is in its log, WAL_SPOOL_DIR/prefetch.log, private to
    // the server's user: no terminal and no PostgreSQL log reads a detached process.
    const prefetchLog = path.join(spoolDir, 'prefetch.log')
    const failure = await waitFor('the prefetcher to log its failure to queue 4', async () => {
      const lines = (await fs.readFile(prefetchLog, 'utf8').catch(() => '')).split('\n').filter((line) => line.startsWith('{'))
      return lines.map((line) => JSON.parse(line) as {event?: string; wal?: string; error?: string}).find((entry) => entry.event === 'wal.prefetch_failed' && entry.wal === name(4))
    })
    expect(failure.error).toMatch(/damaged/)
    expect((await fs.stat(prefetchLog)).mode & 0o777).toBe(0o600)

    const fifth = await fetch(5, 'pg_wal/RECOVERYXLOG5')
    expect(fifth.code).toBe(0)
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG5'))).equals(contents.get(5)!)).toBe(true)

    // The end of the archive is still a quiet exit 1.
    expect((await fetch(6, 'pg_wal/RECOVERYXLOG6')).code).toBe(1)
  }, 120_000)

  it('never serves a queue entry of another archive (the queue is keyed by the storage settings)', async () => {
    const otherQueue = queueDirFor(spoolDir, storageIdentity({BACKUP_LOCAL_DIR: '/some/other/archive'}))
    await fs.mkdir(otherQueue, {recursive: true})
    await fs.writeFile(path.join(otherQueue, name(3)), randomBytes(1024))
    const result = await fetch(3, 'pg_wal/OTHER')
    expect(result.code).toBe(0)
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'OTHER'))).equals(contents.get(3)!)).toBe(true)
  }, 60_000)
})
