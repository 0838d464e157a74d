import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {processStartTime} from '../../src/process-alive'
import {uploaderLock} from '../../src/wal/foreground'
import {isThisProcess, lockSpool} from '../../src/wal/spool'

// A lock names this process only by pid AND start time: in another pid namespace (a sidecar's
// serve, a detached uploader a push started) a different process has the same pid, often 1. The
// uploader's lost()/release() and the prefetcher's publication of its queue decide by this.
describe('isThisProcess', () => {
  const ownStart = processStartTime(process.pid)

  it('is true for a lock with this pid and this start time', () => {
    expect(ownStart).toBeTruthy()
    expect(isThisProcess({pid: process.pid, readAheadDir: '', startTime: ownStart})).toBe(true)
  })

  it("is false for this pid with another start time (another namespace's process, or this pid's earlier holder)", () => {
    expect(isThisProcess({pid: process.pid, readAheadDir: '', startTime: `${Number(ownStart) + 1}`})).toBe(false)
    expect(isThisProcess({pid: process.pid, readAheadDir: ''})).toBe(false)
  })

  it('is false for another pid, and for no lock', () => {
    expect(isThisProcess({pid: process.pid + 1, readAheadDir: '', startTime: ownStart})).toBe(false)
    expect(isThisProcess(undefined)).toBe(false)
  })
})

// Serve releases the spool lock after each uploader run, and goes on when the release fails (the
// spool unreadable at that moment). The lock file it leaves names serve itself; taken for another
// live holder's, it kept serve from ever taking the spool again — and pushes, seeing serve alive,
// from starting an uploader: nothing drained the spool.
describe('lockSpool and a lock left behind', () => {
  let dir: string
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-lock-owner-'))
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it("a lock naming this very process (its own release failed) is taken again, now naming what this take asks for", async () => {
    expect(await lockSpool(dir)).toBeDefined()
    // No release: as after a release that failed.
    const again = await lockSpool(dir, '/srv/pg/pg_wal')
    expect(again).toBeDefined()
    expect(uploaderLock(dir)).toMatchObject({pid: process.pid, readAheadDir: '/srv/pg/pg_wal'})
    expect(again!.lost()).toBe(false)
    await again!.release()
    expect(uploaderLock(dir)).toBeUndefined()
  })

  it("a lock naming another live process is still left to it", async () => {
    const other = spawn('sleep', ['30'], {stdio: 'ignore'})
    try {
      await new Promise((resolve) => other.once('spawn', resolve))
      const lock = `${other.pid}\n\n${processStartTime(other.pid!)}\n`
      await fs.writeFile(path.join(dir, 'uploader.pid'), lock)
      expect(await lockSpool(dir)).toBeUndefined()
      expect(await fs.readFile(path.join(dir, 'uploader.pid'), 'utf8')).toBe(lock)
    } finally {
      other.kill('SIGKILL')
    }
  })

  // Two uploaders in separate pid namespaces started in the same clock tick are both pid 1 with one
  // start time; each saw the other's lock as its own leftover and both uploaded (CI, session 21).
  // The lock's fourth line, the holder's random tag, tells them apart.
  it("a lock with this pid and start time but another tag (a twin in another pid namespace) is the twin's: left to it, and the holder it replaced has lost it", async () => {
    const mine = await lockSpool(dir)
    expect(mine).toBeDefined()
    const lockFile = path.join(dir, 'uploader.pid')
    const [pid, readAhead, start, tag] = (await fs.readFile(lockFile, 'utf8')).split('\n')
    expect([pid, start]).toEqual([String(process.pid), processStartTime(process.pid)])
    expect(tag).toMatch(new RegExp(`^${process.pid}\\.[0-9a-f]{8}$`))
    expect(isThisProcess(uploaderLock(dir))).toBe(true)

    const twins = `${pid}\n${readAhead}\n${start}\n${process.pid}.0badc0de\n`
    await fs.writeFile(lockFile, twins)
    expect(isThisProcess(uploaderLock(dir))).toBe(false)
    expect(mine!.lost()).toBe(true)
    expect(await lockSpool(dir)).toBeUndefined()
    await mine!.release()
    expect(await fs.readFile(lockFile, 'utf8')).toBe(twins)
    // A lock written before the tag (three lines) still counts as this process's by pid and start time.
    await fs.writeFile(lockFile, `${pid}\n${readAhead}\n${start}\n`)
    expect(isThisProcess(uploaderLock(dir))).toBe(true)
  })
})
