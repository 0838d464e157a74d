import {ChildProcess, execFileSync, spawn, spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {processStartTime} from '../../src/process-alive'
import {uploaderLock} from '../../src/wal/foreground'
import {BIN, cliEnv, collect, runCli, startCli, tempDir} from '../helpers/cli'
import {CRASH_SEED, killPoints, runWithKill} from '../helpers/crash-harness'
import {asServerUser, isRoot} from '../helpers/postgres'
import {processOrChildOf, waitFor} from '../helpers/wal'

/**
 * The async spool's guarantees, with the real CLI and the real detached uploader: a segment is
 * acknowledged only once durably spooled, a SIGKILLed uploader loses nothing and its re-upload is
 * idempotent, and a full spool (storage down) fails the push so PostgreSQL retries — nothing is
 * acknowledged and then dropped.
 */
describe('wal push --async spool', () => {
  let workDir: string
  let storeDir: string
  let spoolDir: string
  const children: ChildProcess[] = []

  beforeEach(async () => {
    workDir = await tempDir('dbb-spool-work-')
    storeDir = path.join(workDir, 'store')
    spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(path.join(workDir, 'pg_wal', 'archive_status'), {recursive: true})
    await fs.mkdir(storeDir)
  })

  afterEach(async () => {
    for (const child of children.splice(0)) child.kill('SIGKILL')
    const pid = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }

    await fs.rm(workDir, {recursive: true, force: true})
  })

  const segmentName = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`
  async function writeSegment(n: number): Promise<Buffer> {
    const content = Buffer.concat([randomBytes(256 * 1024), Buffer.alloc(768 * 1024)])
    await fs.writeFile(path.join(workDir, 'pg_wal', segmentName(n)), content)
    return content
  }

  const spooled = async () => (await fs.readdir(spoolDir).catch(() => [] as string[])).filter((entry) => /^[0-9A-F]{24}$/.test(entry)).sort()
  const stored = async (n: number) => gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${segmentName(n)}.gz`)))
  const env = (extra: Record<string, string> = {}) => ({BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir, ...extra})
  const pushAsync = (n: number, extra: Record<string, string> = {}) => runCli(['wal', 'push', '--async', `pg_wal/${segmentName(n)}`], env(extra), {cwd: workDir})

  it('SIGKILL of the uploader mid-spool loses nothing: the next push starts a new uploader, re-uploads are idempotent', async () => {
    const contents = new Map<number, Buffer>()
    for (let n = 1; n <= 6; n++) contents.set(n, await writeSegment(n))
    // A segment stored earlier whose spool copy was never removed: an uploader killed between upload and removal.
    const first = await runCli(['wal', 'push', `pg_wal/${segmentName(1)}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})
    expect(first.code).toBe(0)
    const firstStat = await fs.stat(path.join(storeDir, 'wal', `${segmentName(1)}.gz`))

    // Queue everything with storage unreachable (a file where the directory should be), so the spool holds all six.
    const blocked = path.join(workDir, 'blocked')
    await fs.writeFile(blocked, '')
    for (let n = 1; n <= 6; n++) expect((await pushAsync(n, {BACKUP_LOCAL_DIR: path.join(blocked, 'store')})).code).toBe(0)
    expect(await spooled()).toEqual([1, 2, 3, 4, 5, 6].map(segmentName))
    const pid = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8')).split('\n')[0])
    process.kill(pid, 'SIGKILL')
    await waitFor('the uploader to die', async () => {
      try {
        process.kill(pid, 0)
        return undefined
      } catch {
        return true
      }
    })

    // The stale pid file is taken over by the uploader the next push starts, now with working storage.
    await writeSegment(7).then((content) => contents.set(7, content))
    expect((await pushAsync(7)).code).toBe(0)
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    for (const [n, content] of contents) expect((await stored(n)).equals(content)).toBe(true)
    // Segment 1 was already stored: compared by content, not rewritten.
    expect((await fs.stat(path.join(storeDir, 'wal', `${segmentName(1)}.gz`))).mtimeMs).toBe(firstStat.mtimeMs)
  }, 120_000)

  // A container restarted on the same volume numbers its processes from 1 again: the lock of an
  // uploader SIGKILLed with the old container can name a live process of the new one. It records
  // its holder's start time, so the next push still starts an uploader (before: none ever again).
  it("a killed uploader's lock whose pid now belongs to another process is taken over: the spool drains", async () => {
    const contents = new Map<number, Buffer>()
    contents.set(1, await writeSegment(1))
    const blocked = path.join(workDir, 'blocked')
    await fs.writeFile(blocked, '')
    expect((await pushAsync(1, {BACKUP_LOCAL_DIR: path.join(blocked, 'store')})).code).toBe(0)
    const lockFile = path.join(spoolDir, 'uploader.pid')
    // The uploader the push started takes its lock once Node is up.
    const lock = await waitFor('the uploader to hold the spool', async () => fs.readFile(lockFile, 'utf8').catch(() => undefined))
    const [killedPid, readAhead, startTime] = lock.split('\n')
    expect(startTime).toMatch(/^\d+$/)
    process.kill(Number(killedPid), 'SIGKILL')
    await waitFor('the uploader to die', async () => {
      try {
        process.kill(Number(killedPid), 0)
        return undefined
      } catch {
        return true
      }
    })

    // Its pid given to another live process: the lock is otherwise the killed uploader's own.
    const other = spawn('sleep', ['60'], {stdio: 'ignore'})
    children.push(other)
    await fs.writeFile(lockFile, `${other.pid}\n${readAhead}\n${startTime}\n`)
    contents.set(2, await writeSegment(2))
    expect((await pushAsync(2)).code).toBe(0)
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    for (const [n, content] of contents) expect((await stored(n)).equals(content)).toBe(true)
    expect(Number((await fs.readFile(lockFile, 'utf8').catch(() => '')).split('\n')[0])).not.toBe(other.pid)
  }, 120_000)

  // An uploader SIGKILLed between its read-ahead copy and the upload left the copy for good
  // (PostgreSQL's retry of that segment goes through the spool). Copies are per uploader now, and the
  // next uploader removes those of processes that no longer run, and the old layout's loose files.
  it("a dead uploader's leftovers (read-ahead copies, a marker's temporary file, a staged or set-aside lock) are removed by the next uploader; a running one's are kept", async () => {
    const ahead = path.join(spoolDir, 'ahead')
    const dead = String(spawnSync(process.execPath, ['-e', '0']).pid)
    const live = spawn('sleep', ['60'], {stdio: 'ignore'})
    children.push(live)
    // Directories are `<pid>.<tag>` (`<pid>` in the layout before the tag: both are read).
    for (const [dir, name] of [[dead, segmentName(9)], [`${dead}.0badf00d`, segmentName(9)], [`${live.pid}.c0ffee00`, segmentName(7)]]) {
      await fs.mkdir(path.join(ahead, dir), {recursive: true})
      await fs.writeFile(path.join(ahead, dir, name), Buffer.alloc(1024 * 1024))
    }

    await fs.writeFile(path.join(ahead, segmentName(8)), Buffer.alloc(1024 * 1024))
    // What a SIGKILL between two steps leaves: a marker's temporary file, a staged lock, a lock moved aside.
    await fs.mkdir(path.join(spoolDir, 'uploaded'))
    const leftovers = (tag: string) => [path.join(spoolDir, 'uploaded', `${segmentName(6)}.${tag}.tmp`), path.join(spoolDir, `uploader.pid.${tag}`), path.join(spoolDir, `uploader.pid.${tag}.stale`)]
    for (const file of [...leftovers(`${dead}.0badf00d`), ...leftovers(`${live.pid}.c0ffee00`)]) await fs.writeFile(file, '1\n')
    const content = await writeSegment(1)
    expect((await pushAsync(1)).code).toBe(0)
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    expect((await stored(1)).equals(content)).toBe(true)
    const uploader = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
    const left = (await fs.readdir(ahead)).filter((entry) => entry.split('.')[0] !== String(uploader))
    expect(left).toEqual([`${live.pid}.c0ffee00`])
    expect(await fs.readdir(path.join(ahead, `${live.pid}.c0ffee00`))).toEqual([segmentName(7)])
    const present = async (file: string) => fs.access(file).then(() => true, () => false)
    for (const file of leftovers(`${dead}.0badf00d`)) expect([file, await present(file)]).toEqual([file, false])
    for (const file of leftovers(`${live.pid}.c0ffee00`)) expect([file, await present(file)]).toEqual([file, true])
  }, 120_000)

  // Two uploaders that cannot see each other's processes (serve in a sidecar without a shared pid
  // namespace beside the detached one a push starts — unsupported, README, yet a bad day's setup):
  // each takes the other's lock for stale, and in containers both can have the same pid. What they
  // store must still be each segment's exact bytes: their read-ahead copies must never be one file.
  it.each([0, 1, 2])('two uploaders in separate pid namespaces, both pid 1, reading ahead the same pg_wal: every segment stored byte for byte (run %i)', async () => {
    const contents = new Map<number, Buffer>()
    for (let n = 1; n <= 8; n++) {
      const content = randomBytes(4 * 1024 * 1024)
      await fs.writeFile(path.join(workDir, 'pg_wal', segmentName(n)), content)
      await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), '')
      contents.set(n, content)
    }

    // Each its own pid namespace and /proc, as a container has: pid 1 there (a user namespace too when not root, to be allowed one).
    const namespaced = ['unshare', ...(isRoot ? [] : ['--user', '--map-root-user']), '--pid', '--fork', '--mount-proc', '--', process.execPath, BIN, 'wal', 'spool-upload', path.join(workDir, 'pg_wal')]
    const uploaders = [0, 1].map(() => spawn(namespaced[0], namespaced.slice(1), {env: cliEnv(env({WAL_ASYNC_PARALLEL: '4'})), cwd: workDir, stdio: ['ignore', 'pipe', 'pipe']}))
    children.push(...uploaders)
    const outputs = uploaders.map((uploader) => collect(uploader))
    const results = await Promise.all(outputs)
    for (const result of results) expect([result.code, result.stderr.includes('"level":50') ? result.stderr : '']).toEqual([0, ''])
    for (const [n, content] of contents) expect([n, (await stored(n)).equals(content)]).toEqual([n, true])
    // Usually the second takes the first's lock for stale, and the first sees that (by start time:
    // both are pid 1) and stops. Started within one clock tick (/proc's start time is in 10 ms
    // ticks), the two are the same pid and start time to each other, and only the lock's process tag
    // tells them apart: the second takes the lock for its live holder's and leaves at once, storing
    // nothing. Never both lose it, never both keep it.
    const lostIt = results.filter((result) => result.stderr.includes('"event":"wal.spool_lock_lost"'))
    const storedSome = results.filter((result) => /"event":"wal\.(pushed|already_archived)"/.test(result.stderr))
    // Said with each uploader's events, so a failure shows which interleaving it was.
    const events = results.map((result) => result.stderr.split('\n').flatMap((line) => /"event":"([^"]+)"(?:,"wal":"([^"]+)")?/.exec(line)?.slice(1).filter(Boolean).join(' ') ?? []))
    expect([lostIt.length === 1 || (lostIt.length === 0 && storedSome.length === 1), events]).toEqual([true, events])
  }, 120_000)

  it('storage down: the spool fills to WAL_SPOOL_MAX_SEGMENTS, then pushes fail (exit 1, naming the cause) until storage is back', async () => {
    const blocked = path.join(workDir, 'down')
    await fs.writeFile(blocked, '')
    const down = {BACKUP_LOCAL_DIR: path.join(blocked, 'store'), WAL_SPOOL_MAX_SEGMENTS: '2'}
    const contents = new Map<number, Buffer>()
    for (let n = 1; n <= 3; n++) contents.set(n, await writeSegment(n))
    expect((await pushAsync(1, down)).code).toBe(0)
    expect((await pushAsync(2, down)).code).toBe(0)
    await waitFor('the uploader to report its failure', async () => ((await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8').catch(() => '')) ? true : undefined))

    const full = await pushAsync(3, down)
    expect(full.code).toBe(1)
    expect(full.stderr).toMatch(/spool .* is full \(2 files waiting, WAL_SPOOL_MAX_SEGMENTS=2\)/)
    expect(full.stderr).toMatch(/PostgreSQL will retry/)
    expect(full.stderr).toMatch(/uploader's last error: .*00000001000000000000000[12]/)
    expect(await spooled()).toEqual([segmentName(1), segmentName(2)])

    // Storage back (the uploader keeps its environment, so the directory it was given becomes usable).
    await fs.rm(blocked)
    await fs.mkdir(path.join(blocked, 'store'), {recursive: true})
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    expect((await pushAsync(3, down)).code).toBe(0)
    await waitFor('segment 3 stored', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    for (const [n, content] of contents) {
      expect(gunzipSync(await fs.readFile(path.join(blocked, 'store', 'wal', `${segmentName(n)}.gz`))).equals(content)).toBe(true)
    }
  }, 120_000)

  // After a reboot, or an uploader SIGKILLed, with storage down long enough to fill the spool: no
  // uploader runs, and every push fails "full". Each such push must start one, or archiving stalls
  // for good while pg_wal grows (it did: the push started the uploader only after queueing).
  it.each([
    {form: 'a segment (bin/run.js starts the uploader before anything else)', file: segmentName(3), flags: [] as string[]},
    {form: 'a timeline history file (the fast path queues it)', file: '00000002.history', flags: [] as string[]},
    {form: 'a segment, a setting given as a flag (the oclif command)', file: segmentName(3), flags: ['--wal-spool-max-segments', '2']},
  ])('a full spool and no uploader: the push that fails "full" starts one, the spool drains, the retry succeeds — $form', async ({file, flags}) => {
    const contents = new Map<number, Buffer>()
    for (const n of [1, 2]) {
      contents.set(n, await writeSegment(n))
      // Spooled whole, as a push before the reboot left them.
      await fs.mkdir(spoolDir, {recursive: true, mode: 0o700})
      await fs.copyFile(path.join(workDir, 'pg_wal', segmentName(n)), path.join(spoolDir, segmentName(n)))
    }

    const content = file.endsWith('.history') ? Buffer.from('1\t0/3000000\tno recovery target specified\n') : await writeSegment(3)
    await fs.writeFile(path.join(workDir, 'pg_wal', file), content)
    const push = () => runCli(['wal', 'push', '--async', ...flags, `pg_wal/${file}`], env(flags.length > 0 ? {} : {WAL_SPOOL_MAX_SEGMENTS: '2'}), {cwd: workDir})
    const full = await push()
    expect(full.code).toBe(1)
    expect(full.stderr).toMatch(/spool .* is full \(2 files waiting, WAL_SPOOL_MAX_SEGMENTS=2\)/)

    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    for (const [n, expected] of contents) expect((await stored(n)).equals(expected)).toBe(true)
    // PostgreSQL's retry.
    const retried = await push()
    expect(retried.code).toBe(0)
    await waitFor(`${file} stored`, async () => {
      const object = await fs.readFile(path.join(storeDir, 'wal', `${file}.gz`)).catch(() => undefined)
      return object && gunzipSync(object).equals(content) ? true : undefined
    }, 60_000)
  }, 120_000)

  // An uploader killed while storage failed (a reboot, a pod restart) leaves its last error behind.
  // The next one, storing from its first attempt, must take it back: /metrics reports the spool as
  // failing while the file is there, a full-spool push quotes it, and every push stops waiting for
  // the read-ahead (bin/dbb-wal and foreground.pushFromReadAhead) and copies its segment instead.
  it("a new uploader that stores takes back the error a killed one left (uploader.error), so it is not reported for ever", async () => {
    const content = await writeSegment(1)
    await fs.mkdir(spoolDir, {recursive: true, mode: 0o700})
    const errorFile = path.join(spoolDir, 'uploader.error')
    await fs.writeFile(errorFile, `2026-12-05T00:00:00.000Z ${segmentName(0)}: storage was down\n`)
    expect((await pushAsync(1)).code).toBe(0)
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    expect((await stored(1)).equals(content)).toBe(true)
    await waitFor('the inherited error to be taken back', async () => (existsSync(errorFile) ? undefined : true), 10_000)
  }, 120_000)

  // The one lock-takeover interleaving left (three takers, two races at once; RELIABILITY.md) can
  // give a running uploader's lock to another process. The first then stops starting uploads, so the
  // two overlap only by what is in flight, and it leaves the other's lock alone when it exits.
  it('an uploader whose lock names another process now stops (storage down: it would retry forever), leaving that lock and the spool as they are', async () => {
    const blocked = path.join(workDir, 'down')
    await fs.writeFile(blocked, '')
    await writeSegment(1)
    expect((await pushAsync(1, {BACKUP_LOCAL_DIR: path.join(blocked, 'store')})).code).toBe(0)
    const lockFile = path.join(spoolDir, 'uploader.pid')
    const uploader = await waitFor('the uploader to take the lock', async () => Number((await fs.readFile(lockFile, 'utf8').catch(() => '')).split('\n')[0]) || undefined)
    await waitFor('the uploader to report its failure', async () => ((await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8').catch(() => '')) ? true : undefined))

    const other = spawn('sleep', ['60'], {stdio: 'ignore'})
    children.push(other)
    await fs.writeFile(`${lockFile}.swap`, `${other.pid}\n\n${processStartTime(other.pid!)}\n`)
    await fs.rename(`${lockFile}.swap`, lockFile)
    await waitFor(
      'the uploader to stop',
      async () => {
        try {
          process.kill(uploader, 0)
          return undefined
        } catch {
          return true
        }
      },
      15_000,
    )
    expect(Number((await fs.readFile(lockFile, 'utf8')).split('\n')[0])).toBe(other.pid)
    expect(await fs.readFile(path.join(spoolDir, 'uploader.log'), 'utf8')).toMatch(/"event":"wal.spool_lock_lost"/)
    expect(await spooled()).toEqual([segmentName(1)])
  }, 60_000)

  it('stores ready segments ahead of their push; the push then answers from the marker without copying', async () => {
    const contents = new Map<number, Buffer>()
    for (let n = 1; n <= 4; n++) {
      contents.set(n, await writeSegment(n))
      await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), '')
    }

    const uploader = startCli(['wal', 'spool-upload', path.join(workDir, 'pg_wal')], env(), {cwd: workDir})
    children.push(uploader)
    await waitFor('read-ahead of all four', async () => ((await fs.readdir(path.join(spoolDir, 'uploaded')).catch(() => [])).length === 4 ? true : undefined), 60_000)
    for (let n = 1; n <= 4; n++) {
      const push = await pushAsync(n)
      expect(push.code).toBe(0)
      expect(push.stdout).toMatch(/Already stored by the uploader/)
      expect((await stored(n)).equals(contents.get(n)!)).toBe(true)
    }

    expect(await spooled()).toEqual([])
  }, 120_000)

  // The spool on its own small filesystem (a volume), full: the push that cannot be spooled fails
  // so PostgreSQL keeps the segment and retries, leaves no partial copy taking the space, and what
  // is queued stays whole; once storage is back the uploader drains the spool and the retry succeeds.
  it("the spool's filesystem full: the push fails (exit 1, ENOSPC named), no partial copy left, the queued segment intact; the retry succeeds once the spool drains", async () => {
    if (!isRoot) throw new Error('this test mounts a small tmpfs as the spool: run the suite as root, as CI does')
    await fs.mkdir(spoolDir)
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1600k', 'tmpfs', spoolDir])
    try {
      // Storage down in a way the running uploader sees recover: a file where its directory goes.
      const down = path.join(workDir, 'down')
      await fs.writeFile(down, '')
      const contents = new Map<number, Buffer>()
      for (const n of [1, 2]) contents.set(n, await writeSegment(n))
      expect((await pushAsync(1, {BACKUP_LOCAL_DIR: path.join(down, 'store')})).code).toBe(0)
      const full = await pushAsync(2, {BACKUP_LOCAL_DIR: path.join(down, 'store')})
      expect([full.code, full.stderr]).toEqual([1, expect.stringMatching(/ENOSPC|no space/i)])
      expect(full.stderr).toContain(`queuing ${segmentName(2)} in ${spoolDir} failed (the filesystem holding WAL_SPOOL_DIR is full`)
      expect(full.stderr).toContain('stays in pg_wal and PostgreSQL will retry')
      expect(await spooled()).toEqual([segmentName(1)])
      expect((await fs.readdir(spoolDir)).filter((entry) => entry.includes('partial'))).toEqual([])
      expect((await fs.readFile(path.join(spoolDir, segmentName(1)))).equals(contents.get(1)!)).toBe(true)

      await fs.rm(down)
      await fs.mkdir(path.join(down, 'store'), {recursive: true})
      await waitFor('the spool to drain once storage is back', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
      const retry = await pushAsync(2, {BACKUP_LOCAL_DIR: path.join(down, 'store')})
      expect([retry.code, retry.stderr]).toEqual([0, ''])
      await waitFor('the retried segment stored', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
      for (const n of [1, 2]) {
        const object = await fs.readFile(path.join(down, 'store', 'wal', `${segmentName(n)}.gz`))
        expect(gunzipSync(object).equals(contents.get(n)!)).toBe(true)
      }
    } finally {
      for (const child of children.splice(0)) child.kill('SIGKILL')
      const holder = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
      if (holder > 0) spawnSync('kill', ['-KILL', String(holder)])
      execFileSync('umount', ['-l', spoolDir])
    }
  }, 120_000)

  // Storage is unreachable here so that no uploader can store the queued file and take it out of the
  // spool before the push looks (each push starts one when none runs; in CI one did, once).
  it('a different file under a name queued in the spool is refused, never overwritten', async () => {
    const blocked = path.join(workDir, 'down')
    await fs.writeFile(blocked, '')
    await fs.mkdir(spoolDir, {recursive: true, mode: 0o700})
    const queued = randomBytes(1024)
    await fs.writeFile(path.join(workDir, 'pg_wal', segmentName(9)), randomBytes(1024))
    await fs.writeFile(path.join(spoolDir, segmentName(9)), queued)
    const conflict = await pushAsync(9, {BACKUP_LOCAL_DIR: path.join(blocked, 'store')})
    expect(conflict.code).toBe(1)
    expect(conflict.stderr).toMatch(/already queued .* with different content/)
    expect((await fs.readFile(path.join(spoolDir, segmentName(9)))).equals(queued)).toBe(true)
  }, 60_000)

  // The read-ahead's phase boundaries, from outside: a SIGKILL once the segment is copied and its
  // upload begins, once storage holds it but before its marker, once it is done (the marker written,
  // the copy removed), and after seeded delays. After each: a marker names only a segment stored
  // whole; PostgreSQL's retries of all four succeed and leave each stored byte for byte; the next
  // uploader (the next segment's push starts it) removes what the killed one left.
  for (const point of killPoints(['wal.push_uploading', 'wal.pushed', 'wal.spool_uploaded'], 500, 3, CRASH_SEED + 19)) {
    it(`the uploader SIGKILLed ${point.label} while reading ahead: nothing acknowledged that is not stored whole, the retries succeed, the next uploader removes its leftovers`, async () => {
      const contents = new Map<number, Buffer>()
      for (let n = 1; n <= 4; n++) {
        contents.set(n, await writeSegment(n))
        await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), '')
      }

      const run = await runWithKill(['wal', 'spool-upload', path.join(workDir, 'pg_wal')], env(), point, 60_000)
      expect([run.killed, run.signal]).toEqual([true, 'SIGKILL'])
      // A delay can land before the uploader took the lock (a slow start under load): the same checks hold.
      const killed = run.pid

      const uploadedDir = path.join(spoolDir, 'uploaded')
      for (const entry of await fs.readdir(uploadedDir).catch(() => [] as string[])) {
        if (entry.endsWith('.tmp')) continue
        const n = Number.parseInt(entry.slice(-2), 16)
        expect([entry, (await stored(n)).equals(contents.get(n)!)]).toEqual([entry, true])
      }

      // PostgreSQL's retries, one segment at a time, each marked done as the archiver does.
      for (let n = 1; n <= 4; n++) {
        const push = await pushAsync(n)
        expect([n, push.code, push.stderr]).toEqual([n, 0, ''])
        await fs.rename(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.done`))
      }

      // The next segment: the retries may all have been answered from markers without starting an
      // uploader; its push starts one if none runs, which removes the killed one's leftovers first.
      contents.set(5, await writeSegment(5))
      await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(5)}.ready`), '')
      expect((await pushAsync(5)).code).toBe(0)
      await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
      for (let n = 1; n <= 5; n++) expect((await stored(n)).equals(contents.get(n)!)).toBe(true)
      // An upload the kill cut off is left as storage's hidden `.partial` (never under a final name);
      // prune removes it once ORPHAN_GRACE has passed, as it does a killed push's.
      const finalNames = [1, 2, 3, 4, 5].map((n) => `${segmentName(n)}.gz`)
      const archived = (await fs.readdir(path.join(storeDir, 'wal'))).sort()
      expect(archived.filter((entry) => !entry.endsWith('.partial'))).toEqual(finalNames)
      await new Promise((resolve) => setTimeout(resolve, 1200))
      const prune = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: storeDir, ORPHAN_GRACE: '1s'})
      expect([prune.code, prune.code === 0 ? '' : prune.stderr]).toEqual([0, ''])
      expect((await fs.readdir(path.join(storeDir, 'wal'))).sort()).toEqual(finalNames)
      const killedFiles = [
        ...(await fs.readdir(path.join(spoolDir, 'ahead')).catch(() => [] as string[])),
        ...(await fs.readdir(uploadedDir).catch(() => [] as string[])),
        ...(await fs.readdir(spoolDir)),
      ].filter((entry) => entry.startsWith(`${killed}.`) || entry.includes(`.${killed}.`))
      expect(killedFiles).toEqual([])
    }, 120_000)
  }

  // pg_wal turns unreadable under a detached uploader: it must stop promising read-ahead (every push
  // would wait 5 s for its marker) and still drain what the pushes spooled — not exit and leave
  // acknowledged WAL outside storage until some later push starts another uploader. Two ways a ready
  // segment cannot be read: a directory under its name, and the field's case, a file the uploader's
  // OS user may not read (as root, which CI runs as, the uploader runs as the server's user and the
  // file is root's; otherwise the file's mode is 000).
  it.each([
    {how: 'a directory under its name', error: 'EISDIR', otherUser: false},
    {how: 'a file its OS user may not read', error: 'EACCES', otherUser: true},
  ])('a ready segment it cannot read ahead ($how): the uploader takes its lock back without pg_wal and still drains the spool', async ({error, otherUser}) => {
    // Named first, so with one upload at a time it is the first thing the uploader tries.
    const unreadable = segmentName(1)
    await fs.mkdir(spoolDir)
    const contents = new Map<number, Buffer>()
    for (let n = 2; n <= 5; n++) {
      contents.set(n, randomBytes(64 * 1024))
      await fs.writeFile(path.join(spoolDir, segmentName(n)), contents.get(n)!)
    }

    if (otherUser && isRoot) {
      await fs.chmod(workDir, 0o755)
      spawnSync('chown', ['-R', 'postgres:postgres', workDir])
    }

    const unreadablePath = path.join(workDir, 'pg_wal', unreadable)
    if (error === 'EISDIR') await fs.mkdir(unreadablePath)
    else await fs.writeFile(unreadablePath, randomBytes(1024), {mode: isRoot ? 0o600 : 0o000})
    await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${unreadable}.ready`), '')

    const [command, args] = otherUser ? asServerUser(process.execPath, [BIN, 'wal', 'spool-upload', path.join(workDir, 'pg_wal')]) : [process.execPath, [BIN, 'wal', 'spool-upload', path.join(workDir, 'pg_wal')]]
    const uploader = spawn(command, args, {env: cliEnv(env({WAL_ASYNC_PARALLEL: '1'})), cwd: workDir, stdio: ['ignore', 'pipe', 'pipe']})
    children.push(uploader)
    const output = collect(uploader)
    await waitFor('the spool to drain', async () => ((await spooled()).length === 0 ? true : undefined), 60_000)
    for (const [n, content] of contents) expect([n, (await stored(n)).equals(content)]).toEqual([n, true])
    // Still the same uploader, its lock no longer naming pg_wal: a push from it spools at once instead of waiting.
    const holder = uploaderLock(spoolDir)
    expect(holder?.readAheadDir).toBe('')
    expect(processOrChildOf(holder!.pid, uploader.pid!)).toBe(true)
    const {code, stderr} = await output
    expect(code).toBe(0)
    expect(stderr).toMatch(new RegExp(`"event":"wal.read_ahead_failed".*cannot read ${unreadable} ahead from .*${error}`))
    expect(stderr).toMatch(/"event":"wal.spool_uploader_done".*stored 4 files/)
  }, 120_000)

  it('a segment recycled or rewritten in pg_wal after the read-ahead stored it is never acknowledged from the stale copy', async () => {
    const original = new Map<number, Buffer>()
    for (let n = 1; n <= 2; n++) {
      original.set(n, await writeSegment(n))
      await fs.writeFile(path.join(workDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), '')
    }

    const uploader = startCli(['wal', 'spool-upload', path.join(workDir, 'pg_wal')], env(), {cwd: workDir})
    children.push(uploader)
    await waitFor('read-ahead of both', async () => ((await fs.readdir(path.join(spoolDir, 'uploaded')).catch(() => [])).length === 2 ? true : undefined), 60_000)
    const exited = new Promise((resolve) => uploader.once('exit', resolve))
    uploader.kill('SIGKILL')
    await exited

    // Segment 1 recycled: another file renamed onto its name (what PostgreSQL does to reuse a segment), new content.
    const recycled = Buffer.concat([randomBytes(256 * 1024), Buffer.alloc(768 * 1024)])
    await fs.writeFile(path.join(workDir, 'pg_wal', 'recycle.tmp'), recycled)
    await fs.rename(path.join(workDir, 'pg_wal', 'recycle.tmp'), path.join(workDir, 'pg_wal', segmentName(1)))
    // Segment 2 rewritten in place with the same bytes: its mtime moves, so the marker no longer vouches for it either.
    await new Promise((resolve) => setTimeout(resolve, 20))
    await fs.writeFile(path.join(workDir, 'pg_wal', segmentName(2)), original.get(2)!)

    // Segment 1: not answered from the marker; its present content is spooled durably instead.
    const push1 = await pushAsync(1)
    expect(push1.code).toBe(0)
    expect(push1.stdout).not.toMatch(/Already stored by the uploader/)
    expect(push1.stdout).toMatch(/Queued/)
    // Segment 2: the stale marker is not used either. The uploader push 1 started may read segment 2
    // ahead again (its .ready is still there) and vouch for the rewritten file after comparing it
    // with storage (identical): then "already stored", else spooled. Either way storage holds its bytes.
    const push2 = await pushAsync(2)
    expect(push2.code).toBe(0)
    await waitFor('segment 2 to leave the spool', async () => (!(await spooled()).includes(segmentName(2)) ? true : undefined), 60_000)
    // Segment 1's spooled copy differs from the stored one: the uploader refuses to overwrite (loudly) and keeps it spooled.
    await waitFor('the conflict on segment 1 to be reported', async () => ((await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8').catch(() => '')).includes('different content') ? true : undefined), 60_000)
    expect(await spooled()).toEqual([segmentName(1)])
    expect((await fs.readFile(path.join(spoolDir, segmentName(1)))).equals(recycled)).toBe(true)
    expect((await stored(1)).equals(original.get(1)!)).toBe(true)
    expect((await stored(2)).equals(original.get(2)!)).toBe(true)
  }, 120_000)

  it('without WAL_SPOOL_DIR, --async is a configuration error (exit 2) and queues nothing', async () => {
    await writeSegment(1)
    const result = await runCli(['wal', 'push', '--async', `pg_wal/${segmentName(1)}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/WAL_SPOOL_DIR: is required/)
  })
})
