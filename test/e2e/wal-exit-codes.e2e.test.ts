import {ChildProcess, execFileSync, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {EXIT_WAL_FETCH_FATAL, EXIT_WAL_NOT_IN_ARCHIVE} from '../../src/errors'
import {BIN, CliResult, collect, cliEnv, runCli, startCli, tempDir} from '../helpers/cli'
import {RecordingProxy, startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {waitFor} from '../helpers/serve'

/**
 * The exit-code contract of wal fetch (PostgreSQL's restore_command: 1–125 = "not in the archive",
 * recovery ends and the server promotes; above 125 = recovery aborts) and of wal push
 * (archive_command: any non-zero = PostgreSQL keeps the segment and retries), failure by failure,
 * on local storage and on a real s3rver.
 */
describe('wal fetch / wal push exit codes', () => {
  const segment = '000000010000000000000003'
  let storeDir: string
  let workDir: string
  let s3: S3Server
  let proxy: RecordingProxy

  beforeAll(async () => {
    storeDir = await tempDir('dbb-walrc-store-')
    workDir = await tempDir('dbb-walrc-work-')
    await fs.chmod(workDir, 0o777)
    await fs.mkdir(path.join(workDir, 'pg_wal'), {mode: 0o777})
    await fs.chmod(path.join(workDir, 'pg_wal'), 0o777)
    await fs.writeFile(path.join(workDir, 'pg_wal', segment), Buffer.alloc(1024 * 1024, 3))
    expect((await runCli(['wal', 'push', `pg_wal/${segment}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})).code).toBe(0)
    s3 = await startS3Server()
    proxy = await startRecordingProxy(() => s3.port)
    expect((await runCli(['wal', 'push', `pg_wal/${segment}`], s3.dbbEnv(), {cwd: workDir})).code).toBe(0)
  })

  afterAll(async () => {
    await proxy?.close()
    await s3?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(workDir, {recursive: true, force: true})
  })

  const fetchLocal = (name: string, env: Record<string, string> = {}, dest = 'pg_wal/RECOVERYXLOG') =>
    runCli(['wal', 'fetch', name, dest], {BACKUP_LOCAL_DIR: storeDir, ...env}, {cwd: workDir})

  /** Stores `bytes` as the archived copy of `name`, bypassing dbb (a damaged object). */
  const plant = async (name: string, bytes: Buffer) => {
    await fs.mkdir(path.join(storeDir, 'wal'), {recursive: true})
    await fs.writeFile(path.join(storeDir, 'wal', `${name}.gz`), bytes)
  }

  const expectFatal = async (result: CliResult, message: RegExp) => {
    expect(result.code).toBe(EXIT_WAL_FETCH_FATAL)
    expect(result.stderr).toMatch(message)
    expect(result.stderr).not.toMatch(/\n\s+at /)
    expect((await fs.readdir(path.join(workDir, 'pg_wal'))).filter((name) => name !== segment)).toEqual([])
  }

  it('the fatal code is above 125 and not one the shell uses (126, 127, 128+signal)', () => {
    expect(EXIT_WAL_FETCH_FATAL).toBeGreaterThan(128 + 64)
    expect(EXIT_WAL_FETCH_FATAL).toBeLessThan(256)
    expect(EXIT_WAL_NOT_IN_ARCHIVE).toBe(1)
  })

  it('exit 0 for an archived file, 1 only for a positive "no such object" or a name that cannot be archived', async () => {
    const found = await fetchLocal(segment)
    expect(found.code).toBe(0)
    await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))
    expect((await fetchLocal('000000010000000000000099')).code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect((await fetchLocal('00000002.history')).code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect((await fetchLocal('not-a-wal-file')).code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect((await runCli(['wal', 'fetch', '000000010000000000000099', 'pg_wal/RECOVERYXLOG'], s3.dbbEnv(), {cwd: workDir})).code).toBe(
      EXIT_WAL_NOT_IN_ARCHIVE,
    )
  })

  it('a damaged archived copy (one flipped byte, truncated, not gzip) is fatal, and nothing is written to %p', async () => {
    const good = gzipSync(Buffer.concat([Buffer.from('x'.repeat(1000)), Buffer.alloc(100_000, 9)]))
    const flipped = Buffer.from(good)
    flipped[flipped.length - 6] ^= 0x01 // inside the CRC-32 trailer: decompresses, but the check fails
    await plant('000000010000000000000010', flipped)
    await expectFatal(await fetchLocal('000000010000000000000010'), /reading|damaged/)
    await plant('000000010000000000000011', good.subarray(0, good.length - 20))
    // Node's gunzip or igzip (src/compress/file-programs.ts), each in its own words.
    await expectFatal(await fetchLocal('000000010000000000000011'), /damaged \((unexpected end of file|not a valid gzip stream \(igzip exit code 1: .*does not contain a complete gzip file)/)
    await plant('000000010000000000000012', Buffer.from('this is not gzip'))
    await expectFatal(await fetchLocal('000000010000000000000012'), /damaged/)
  })

  it('a missing BACKUP_LOCAL_DIR (unmounted volume) is fatal, never "not found"', async () => {
    const result = await fetchLocal(segment, {BACKUP_LOCAL_DIR: `${storeDir}-unmounted`})
    await expectFatal(result, /backup directory .*-unmounted does not exist/)
  })

  it('bad configuration and bad usage are fatal, not 2', async () => {
    await expectFatal(await fetchLocal(segment, {STORAGE_BACKEND: 'nope'}), /unknown storage backend "nope"/)
    await expectFatal(await runCli(['wal', 'fetch', segment], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir}), /Missing 1 required arg/)
    await expectFatal(await runCli(['wal', 'fetch', segment, 'x', '--bogus'], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir}), /Nonexistent flag/)
    await expectFatal(await runCli(['wal', 'fetch', segment, 'x'], {BACKUP_LOCAL_DIR: ''}, {cwd: workDir}), /BACKUP_LOCAL_DIR: is required/)
  })

  it('a destination that cannot be written is fatal', async () => {
    await expectFatal(await fetchLocal(segment, {}, 'no_such_dir/RECOVERYXLOG'), /writing .*no_such_dir\/RECOVERYXLOG/)
  })

  it('an uncaught exception or unhandled rejection anywhere in the process is fatal (Node would exit 1)', async () => {
    const thrower = path.join(workDir, 'throw-later.js')
    await fs.writeFile(thrower, "setImmediate(() => { throw new Error('injected bug') })\n")
    await expectFatal(await fetchLocal(segment, {NODE_OPTIONS: `--require ${thrower}`}), /unexpected error: injected bug/)
    const rejecter = path.join(workDir, 'reject-later.js')
    await fs.writeFile(rejecter, "setImmediate(() => Promise.reject(new Error('injected rejection')))\n")
    await expectFatal(await fetchLocal(segment, {NODE_OPTIONS: `--require ${rejecter}`}), /unexpected error: injected rejection/)
  })

  // The handler removes the fetch's temporary file; an exception at any moment (before the file
  // exists, while its creation could still be in flight, mid-stream, after the rename) must leave
  // pg_wal with nothing half-written: either no file or the whole segment, and no .dbb-partial.
  it('an exception at any moment of a fetch leaves nothing half-written in pg_wal', async () => {
    const large = '000000010000000000000005'
    const bytes = randomBytes(16 * 1024 * 1024)
    await fs.writeFile(path.join(workDir, 'pg_wal', large), bytes)
    expect((await runCli(['wal', 'push', `pg_wal/${large}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})).code).toBe(0)
    await fs.rm(path.join(workDir, 'pg_wal', large))
    const thrower = path.join(workDir, 'throw-after.js')
    await fs.writeFile(thrower, "setTimeout(() => { throw new Error('injected bug') }, Number(process.env.DBB_TEST_THROW_AFTER_MS)).unref()\n")
    // Delays spread over one whole fetch as timed on this machine now (start-up is most of it; the
    // stream is the last third or so), so a slow CI machine is swept as densely as a fast one.
    const started = Date.now()
    expect((await fetchLocal(large)).code).toBe(0)
    const fetchMs = Date.now() - started
    await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))
    const delays = [0, 1, 2, 5, ...Array.from({length: 18}, (_, step) => Math.round(fetchMs * (0.3 + step * 0.05)))]
    const outcomes = new Set<string>()
    const attempt = async (delay: number) => {
      const result = await fetchLocal(large, {NODE_OPTIONS: `--require ${thrower}`, DBB_TEST_THROW_AFTER_MS: String(delay)})
      const left = (await fs.readdir(path.join(workDir, 'pg_wal'))).filter((name) => name !== segment)
      expect(left.filter((name) => name !== 'RECOVERYXLOG')).toEqual([])
      if (left.includes('RECOVERYXLOG')) {
        expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(bytes)).toBe(true)
        await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))
      }

      if (result.code === 0) expect(left).toEqual(['RECOVERYXLOG'])
      else expect(result.code).toBe(EXIT_WAL_FETCH_FATAL)
      outcomes.add(result.code === 0 ? 'fetched' : 'fatal')
    }

    for (const delay of delays) await attempt(delay)
    // Under load (other suites beside this one) a fetch can take longer than the one timed above:
    // then the sweep goes on past it, doubling the delay (at most four more), until one finishes first.
    for (let delay = fetchMs * 2; !outcomes.has('fetched') && delay <= fetchMs * 16; delay *= 2) await attempt(delay)
    // The sweep reached both sides: killed by the bug early, finished before the timer late.
    expect([...outcomes].sort()).toEqual(['fatal', 'fetched'])
  }, 120_000)

  // A fetch ended from outside mid-download: PostgreSQL's fast shutdown sends SIGTERM to
  // restore_command's process group, an immediate shutdown SIGQUIT, a terminal SIGINT or SIGHUP.
  // The download is held mid-stream by the proxy, so the temporary file certainly exists when the
  // signal lands. The fetch removes it and exits 128 + n, which PostgreSQL reads as that signal (a
  // fast shutdown for SIGTERM, fatal otherwise). A SIGKILL runs no handler: the next fetch into the
  // directory removes what it left, and only what a dead process left.
  describe('a fetch stopped mid-download', () => {
    const large = '000000010000000000000007'
    let bytes: Buffer

    beforeAll(async () => {
      bytes = randomBytes(16 * 1024 * 1024)
      await fs.writeFile(path.join(workDir, 'pg_wal', large), bytes)
      expect((await runCli(['wal', 'push', `pg_wal/${large}`], s3.dbbEnv(), {cwd: workDir})).code).toBe(0)
      await fs.rm(path.join(workDir, 'pg_wal', large))
    })

    const pgWal = async () => (await fs.readdir(path.join(workDir, 'pg_wal'))).filter((name) => name !== segment).sort()

    /** A fetch whose download stops after 1 MiB: resolves once its temporary file holds bytes. */
    async function heldFetch(): Promise<{child: ChildProcess; result: Promise<CliResult>; partial: string}> {
      proxy.inject({match: (request) => request.method === 'GET' && request.url.includes(large), kind: 'hold', afterBytes: 1024 * 1024})
      const child = startCli(['wal', 'fetch', large, 'pg_wal/RECOVERYXLOG'], s3.dbbEnv({}, proxy.endpoint), {cwd: workDir})
      const result = collect(child)
      const partial = `RECOVERYXLOG.${child.pid}-1.dbb-partial`
      await waitFor(async () => ((await fs.stat(path.join(workDir, 'pg_wal', partial)).catch(() => undefined))?.size ?? 0) > 0 || undefined, 30_000, `${partial} to hold bytes`)
      return {child, result, partial}
    }

    it.each(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP'] as const)('%s: the temporary file is removed and the exit is 128 + the signal', async (signal) => {
      const {child, result} = await heldFetch()
      child.kill(signal)
      const {code, stderr} = await result
      expect([signal, code, stderr]).toEqual([signal, 128 + os.constants.signals[signal], stderr])
      expect(await pgWal()).toEqual([])
    })

    it("SIGKILL leaves its temporary file; the next fetch removes it, keeps a live process's, and delivers the segment", async () => {
      const {child, result, partial} = await heldFetch()
      child.kill('SIGKILL')
      expect((await result).code).toBeNull()
      // What the next fetch must clean up (so this test fails if nothing does), and a file of a
      // process that still runs (this test's own), which must survive.
      const live = `RECOVERYXLOG.${process.pid}-9.dbb-partial`
      await fs.writeFile(path.join(workDir, 'pg_wal', live), 'a live fetch')
      expect(await pgWal()).toEqual([partial, live].sort())

      const again = await runCli(['wal', 'fetch', large, 'pg_wal/RECOVERYXLOG'], s3.dbbEnv(), {cwd: workDir})
      expect([again.code, again.stderr]).toEqual([0, expect.stringContaining(partial)])
      expect(await pgWal()).toEqual(['RECOVERYXLOG', live].sort())
      expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(bytes)).toBe(true)
      await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))
      await fs.rm(path.join(workDir, 'pg_wal', live))
    })
  })

  it('S3 answering 500, and S3 unreachable, are fatal', async () => {
    proxy.inject({match: (request) => request.method === 'GET' && request.url.includes(segment), status: 500, code: 'InternalError', message: 'boom', times: 50})
    const failing = await runCli(['wal', 'fetch', segment, 'pg_wal/RECOVERYXLOG'], s3.dbbEnv({}, proxy.endpoint), {cwd: workDir})
    await expectFatal(failing, /reading 000000010000000000000003 from s3:\/\/.* failed: .*InternalError/)

    await s3.stop()
    try {
      const down = await runCli(['wal', 'fetch', segment, 'pg_wal/RECOVERYXLOG'], s3.dbbEnv(), {cwd: workDir})
      await expectFatal(down, /cannot reach the S3 endpoint .*ECONNREFUSED/)
    } finally {
      await s3.start()
    }
  })

  // The suite runs as root (see HARNESS.md), which is what makes another user's file unreadable to postgres.
  it('permission denied reading the archived file is fatal, naming the file, the user and the fix', async () => {
    const archived = path.join(storeDir, 'wal', `${segment}.gz`)
    await fs.chmod(storeDir, 0o755)
    await fs.chmod(path.join(storeDir, 'wal'), 0o755)
    expect((await fs.stat(archived)).mode & 0o777).toBe(0o640)
    // restore_command runs as the server's user; the file belongs to root (here: dbb serve's user).
    const child = spawn('runuser', ['-u', 'postgres', '--', process.execPath, BIN, 'wal', 'fetch', segment, 'pg_wal/RECOVERYXLOG'], {
      env: cliEnv({BACKUP_LOCAL_DIR: storeDir}),
      cwd: workDir,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const result = await collect(child)
    const postgresUid = execFileSync('id', ['-u', 'postgres'], {encoding: 'utf8'}).trim()
    await expectFatal(result, new RegExp(`permission denied reading ${archived} \\(owner uid 0, group 0, mode 0640\\) as uid ${postgresUid}`))
    expect(result.stderr).toMatch(/fsGroup/)
  })

  it('wal push: any failure is non-zero (PostgreSQL keeps the segment and retries); bad usage 2, everything else 1', async () => {
    const push = (file: string, env: Record<string, string>) => runCli(['wal', 'push', file], env, {cwd: workDir})
    expect((await push(`pg_wal/${segment}`, {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    expect((await push('pg_wal/000000010000000000000042', {BACKUP_LOCAL_DIR: storeDir})).code).toBe(1)
    expect((await push('pg_wal/RECOVERYXLOG', {BACKUP_LOCAL_DIR: storeDir})).code).toBe(2)
    const unmounted = await push(`pg_wal/${segment}`, {BACKUP_LOCAL_DIR: `${storeDir}-unmounted`})
    expect(unmounted.code).toBe(1)
    expect(unmounted.stderr).toMatch(/does not exist/)
    await expect(fs.stat(`${storeDir}-unmounted`)).rejects.toMatchObject({code: 'ENOENT'})
    await s3.stop()
    try {
      const down = await push(`pg_wal/${segment}`, s3.dbbEnv())
      expect(down.code).toBe(1)
      expect(down.stderr).toMatch(/ECONNREFUSED/)
    } finally {
      await s3.start()
    }
  })
})
