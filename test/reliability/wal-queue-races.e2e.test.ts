import {spawn, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {processStartTime} from '../../src/process-alive'
import {fetchWal, pushWal} from '../../src/wal/archive'
import {prefetch} from '../../src/wal/prefetch'
import {ROOT, tempDir} from '../helpers/cli'
import {waitFor} from '../helpers/wal'

/**
 * Two prefetchers at once (a .history probe and the first segment each start one), or a prefetcher
 * answering bin/dbb-wal about a segment its read-ahead is downloading, once handed PostgreSQL a
 * segment of the wrong size ("archive file … has wrong size"): both wrote one temporary file, and
 * the first rename published it while the second still wrote. These race the two guards directly.
 */
describe('prefetch queue races', () => {
  let workDir: string

  beforeEach(async () => {
    workDir = await tempDir('dbb-queue-races-')
  })

  afterEach(async () => {
    await fs.rm(workDir, {recursive: true, force: true})
  })

  it('concurrent fetches of one name into one destination each write their own file: the result is whole, nothing is left behind', async () => {
    await fs.mkdir(path.join(workDir, 'store'))
    const storage = new LocalBackend(path.join(workDir, 'store'))
    const segment = Buffer.concat([randomBytes(2 * 1024 * 1024), Buffer.alloc(6 * 1024 * 1024)])
    const name = '000000010000000000000009'
    await fs.writeFile(path.join(workDir, name), segment)
    await pushWal(storage, path.join(workDir, name))
    const queueDir = path.join(workDir, 'queue')
    await fs.mkdir(queueDir)
    const destination = path.join(queueDir, name)

    for (let round = 0; round < 5; round++) {
      await Promise.all([fetchWal(storage, name, destination), fetchWal(storage, name, destination), fetchWal(storage, name, destination)])
      expect((await fs.readFile(destination)).equals(segment)).toBe(true)
      expect(await fs.readdir(queueDir)).toEqual([name])
    }
  }, 60_000)

  /** Eight processes taking the lock of `spoolDir` at once: each one's answer, held or not. */
  async function eightTakers(spoolDir: string): Promise<string[]> {
    // The holder keeps the lock until every taker has answered (the test then closes its stdin):
    // with a fixed hold, a taker that started late on a loaded machine found the lock released and
    // took it too, which is a second holder in time, not at once.
    const script = `
      const {lockSpool} = require(${JSON.stringify(path.join(ROOT, 'dist', 'wal', 'spool.js'))})
      lockSpool(${JSON.stringify(spoolDir)}).then(async (lock) => {
        process.stdout.write(lock ? 'held' : 'not held')
        if (lock) {
          await new Promise((resolve) => process.stdin.on('end', resolve).resume())
          await lock.release()
        }
      })`
    const takers = Array.from({length: 8}, () => {
      const child = spawn(process.execPath, ['-e', script], {stdio: ['pipe', 'pipe', 'inherit']})
      let out = ''
      const answered = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString()
          resolve()
        })
        child.on('error', reject)
        child.on('close', () => resolve())
      })
      const closed = new Promise<string>((resolve) => child.on('close', () => resolve(out)))
      return {child, answered, closed}
    })
    await Promise.all(takers.map((taker) => taker.answered))
    for (const {child} of takers) child.stdin.end()
    return Promise.all(takers.map((taker) => taker.closed))
  }

  it('of eight processes taking one spool lock at once, exactly one holds it, and the lock file is never seen half-written', async () => {
    const spoolDir = path.join(workDir, 'spool')
    const results = await eightTakers(spoolDir)
    expect(results.filter((result) => result === 'held')).toHaveLength(1)
    expect(results.filter((result) => result === 'not held')).toHaveLength(7)
    // Released by its holder, and no staged copy of any process is left.
    expect((await fs.readdir(spoolDir)).filter((entry) => entry.startsWith('uploader.pid'))).toEqual([])
  }, 60_000)

  // The lock of a SIGKILLed holder (after a crash, with a backlog, the archiver's next pushes each
  // start an uploader while the first is still starting): every taker sees it stale at once. Taking
  // it over must still leave exactly one holder, or two uploaders share the spool's read-ahead copies.
  it('of eight processes finding a stale lock at once, exactly one takes it over', async () => {
    const spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(spoolDir)
    for (let round = 0; round < 6; round++) {
      const dead = spawnSync(process.execPath, ['-e', '0']).pid
      // With a start time no process started now has: on a busy machine (CI, with the suite's other
      // workers spawning) the dead pid can be reused before the takers look, and a lock without one
      // would then name a live process (by its pid alone) and nobody would take it over.
      await fs.writeFile(path.join(spoolDir, 'uploader.pid'), `${dead}\n\n1\n`)
      const results = await eightTakers(spoolDir)
      expect([round, results.filter((result) => result === 'held').length]).toEqual([round, 1])
      expect((await fs.readdir(spoolDir)).filter((entry) => entry.startsWith('uploader.pid'))).toEqual([])
    }
  }, 120_000)

  // Pids are reused: a container restarted on the same volume numbers its processes from 1 again,
  // so a SIGKILLed uploader's lock can name a live process that is not it (here: this test's own
  // process). The lock records its holder's start time, and only that process counts as holding it.
  it('a lock naming a live process that did not write it (a reused pid) is taken over; its real holder keeps it', async () => {
    const spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(spoolDir)
    const started = processStartTime(process.pid)
    expect(started).toMatch(/^\d+$/)

    await fs.writeFile(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n\n${Number(started) - 100}\n`)
    const reused = await eightTakers(spoolDir)
    expect(reused.filter((result) => result === 'held')).toHaveLength(1)

    await fs.writeFile(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n\n${started}\n`)
    expect(await eightTakers(spoolDir)).toEqual(Array.from({length: 8}, () => 'not held'))
    // A lock written before the start time was recorded: the pid alone decides, as before.
    await fs.writeFile(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n\n`)
    expect(await eightTakers(spoolDir)).toEqual(Array.from({length: 8}, () => 'not held'))
  }, 120_000)

  // A prefetcher whose queue lock went to another prefetcher (the takeover interleaving left) would
  // remove that one's entries as outside its own window: it stops instead, and leaves the lock.
  it('a prefetcher whose lock names another process now stops at once, well before its idle exit', async () => {
    await fs.mkdir(path.join(workDir, 'store'))
    const storage = new LocalBackend(path.join(workDir, 'store'))
    const queueDir = path.join(workDir, 'queue')
    const other = spawn('sleep', ['60'], {stdio: 'ignore'})
    try {
      const started = Date.now()
      const running = prefetch({storage, queueDir, name: '000000010000000000000010', count: 2, segmentSize: 16 * 1024 * 1024, idleExitMs: 60_000})
      await waitFor('the prefetcher to take the lock', async () => ((await fs.readFile(path.join(queueDir, 'uploader.pid'), 'utf8').catch(() => '')).startsWith(`${process.pid}\n`) ? true : undefined))
      await fs.writeFile(path.join(queueDir, 'swap'), `${other.pid}\n\n${processStartTime(other.pid!)}\n`)
      await fs.rename(path.join(queueDir, 'swap'), path.join(queueDir, 'uploader.pid'))
      await running
      expect(Date.now() - started).toBeLessThan(30_000)
      expect(Number((await fs.readFile(path.join(queueDir, 'uploader.pid'), 'utf8')).split('\n')[0])).toBe(other.pid)
    } finally {
      other.kill('SIGKILL')
    }
  }, 90_000)
})
