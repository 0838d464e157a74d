import {execFile, execFileSync, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fsSync from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'
import {gunzipSync, gzipSync} from 'node:zlib'

import {EXIT_WAL_FETCH_FATAL, EXIT_WAL_NOT_IN_ARCHIVE} from '../../src/errors'
import {processStartTime} from '../../src/process-alive'
import {walForegroundFetchCommand} from '../../src/restore/recovery-config'
import {PREFETCHER_READY_WAIT_MS, fileIdentity, identityFileText, identityLine, queueDirFor, storageIdentity} from '../../src/wal/foreground'
import {PREFETCH_NICENESS} from '../../src/wal/prefetch'
import {CliResult, ROOT, cliEnv, collect, runCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, isRoot, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {standInPrefetcher, stopLockHolder, waitFor, waitForPromotion} from '../helpers/wal'

const run = promisify(execFile)
const FOREGROUND = path.join(ROOT, 'bin', 'dbb-wal')
const ROWS_DIGEST = `SELECT count(*)::text || ':' || sum(abalance)::text || ':' || md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts`

/** Runs bin/dbb-wal (POSIX sh) as PostgreSQL would, with the Node it execs for everything it does not answer itself. */
function foreground(args: string[], env: Record<string, string | undefined>, cwd: string): Promise<CliResult> {
  return collect(spawn(FOREGROUND, args, {env: cliEnv({DBB_NODE: process.execPath, ...env}), cwd, stdio: ['ignore', 'pipe', 'pipe']}))
}

/**
 * bin/dbb-wal answers the two calls the background prepares without starting Node, and hands
 * everything else to `dbb wal` unchanged; it never acknowledges a segment it did not check and never
 * exits 1–125 (restore_command's "not in archive") on its own.
 */
describe('bin/dbb-wal, the sh foreground', () => {
  const name = '000000010000000000000007'
  let workDir: string
  let storeDir: string
  let spoolDir: string
  const walPath = () => path.join(workDir, 'pg_wal', name)

  beforeEach(async () => {
    workDir = await tempDir('dbb-shfg-work-')
    storeDir = path.join(workDir, 'store')
    spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(path.join(workDir, 'pg_wal', 'archive_status'), {recursive: true})
    await fs.mkdir(path.join(spoolDir, 'uploaded'), {recursive: true})
    await fs.mkdir(storeDir)
  })

  afterEach(async () => {
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
    await fs.rm(workDir, {recursive: true, force: true})
  })

  it("--version prints dbb's version, as `dbb --version` does", async () => {
    const [viaSh, direct] = await Promise.all([foreground(['--version'], {}, workDir), runCli(['--version'])])
    expect(viaSh.code).toBe(0)
    expect(viaSh.stdout).toBe(direct.stdout)
    expect(viaSh.stdout).toMatch(/^dbb\/\d+\.\d+\.\d+/)
  }, 30_000)

  it('is shellcheck-clean', () => {
    // scripts/install-deps.sh installs shellcheck (apt); where it is missing this fails instead of passing silently.
    expect(execFileSync('shellcheck', ['--shell=sh', FOREGROUND], {encoding: 'utf8'})).toBe('')
  })

  it("the read-ahead marker's identity is exactly what GNU stat -c prints", async () => {
    await fs.writeFile(walPath(), randomBytes(4096))
    const shown = execFileSync('stat', ['-c', '%d %i %s %.9Y %.9Z', '--', walPath()], {encoding: 'utf8'}).trim()
    expect(shown).toBe(fileIdentity(await fs.stat(walPath(), {bigint: true})))
    expect(shown).toMatch(/^\d+ \d+ 4096 \d+\.\d{9} \d+\.\d{9}$/)
  })

  it('push --async: acknowledges from a marker of this very file; a recycled file is not acknowledged by the marker and Node spools its present content', async () => {
    const env = {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir}
    const marker = path.join(spoolDir, 'uploaded', name)
    await fs.writeFile(walPath(), randomBytes(64 * 1024))
    await fs.writeFile(marker, `${fileIdentity(await fs.stat(walPath(), {bigint: true}))}\n`)
    const acknowledged = await foreground(['push', '--async', `pg_wal/${name}`], env, workDir)
    expect(acknowledged).toMatchObject({code: 0, stdout: `Already stored by the uploader: ${name} (dbb-wal)\n`})
    expect(fsSync.existsSync(marker)).toBe(false)

    // The uploader's marker vouches for the old file; PostgreSQL recycled the name (a rename onto it).
    await fs.writeFile(marker, `${fileIdentity(await fs.stat(walPath(), {bigint: true}))}\n`)
    const present = randomBytes(64 * 1024)
    await fs.writeFile(path.join(workDir, 'pg_wal', 'recycled'), present)
    await fs.rename(path.join(workDir, 'pg_wal', 'recycled'), walPath())
    const spooled = await foreground(['push', '--async', `pg_wal/${name}`], env, workDir)
    expect(spooled.code).toBe(0)
    expect(spooled.stdout).not.toContain('(dbb-wal)')
    // The uploader Node started stores what the file holds now.
    const stored = await waitFor('the segment in storage', async () => {
      const gz = await fs.readFile(path.join(storeDir, 'wal', `${name}.gz`)).catch(() => undefined)
      return gz && gunzipSync(gz)
    })
    expect(stored.equals(present)).toBe(true)
  }, 60_000)

  it('push --async: waits for the read-ahead marker of a segment PostgreSQL marked ready, and not for any other', async () => {
    // A live uploader (this process stands in for it) reads ahead this very pg_wal and reports no error.
    const walDir = await fs.realpath(path.join(workDir, 'pg_wal'))
    await fs.writeFile(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n${walDir}\n`)
    const env = {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir}
    const marker = path.join(spoolDir, 'uploaded', name)
    await fs.writeFile(walPath(), randomBytes(64 * 1024))

    // Marked ready: the sh polls, and the marker that comes 1.5 s later (well inside its 5 s) answers.
    await fs.writeFile(path.join(walDir, 'archive_status', `${name}.ready`), '')
    const identity = fileIdentity(await fs.stat(walPath(), {bigint: true}))
    const markerLater = new Promise<void>((resolve) => setTimeout(() => void fs.writeFile(marker, `${identity}\n`).then(() => resolve()), 1500))
    const waited = await foreground(['push', '--async', `pg_wal/${name}`], env, workDir)
    await markerLater
    expect(waited).toMatchObject({code: 0, stdout: `Already stored by the uploader: ${name} (dbb-wal)\n`})
    expect(fsSync.existsSync(marker)).toBe(false)

    // Not marked ready (a push by hand, a tool that is not PostgreSQL's archiver): the read-ahead never
    // copies it, so neither the sh nor Node waits; Node spools it at once and the live "uploader" will
    // store it. Without the .ready condition both would poll for 5 s each.
    await fs.rm(path.join(walDir, 'archive_status', `${name}.ready`))
    const started = Date.now()
    const spooled = await foreground(['push', '--async', `pg_wal/${name}`], env, workDir)
    expect(spooled.code).toBe(0)
    expect(spooled.stdout).not.toContain('(dbb-wal)')
    expect(Date.now() - started).toBeLessThan(4000)
    expect((await fs.readFile(path.join(spoolDir, name))).equals(await fs.readFile(walPath()))).toBe(true)
  }, 60_000)

  it('fetch: hands over a queued segment by a rename and tells the prefetcher; anything else is Node and storage answering', async () => {
    const storageArgs = ['--storage', 'local', '--local-dir', storeDir]
    const env = {WAL_SPOOL_DIR: spoolDir}
    const identity = storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir})
    const queue = queueDirFor(spoolDir, identity)
    await fs.mkdir(queue, {recursive: true})
    // A live prefetcher holds the queue (this process stands in for it: it must not be started here).
    await fs.writeFile(path.join(queue, 'uploader.pid'), `${process.pid}\n\n`)
    const queued = randomBytes(128 * 1024)
    await fs.writeFile(path.join(queue, name), queued)
    // Until the prefetcher published its archive's identity, the sh cannot tell the queue is this archive's: Node answers.
    const unpublished = await foreground(['fetch', ...storageArgs, name, 'pg_wal/RECOVERYXLOG'], env, workDir)
    expect(unpublished.stdout).not.toContain('(dbb-wal)')
    await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'), {force: true})
    await fs.writeFile(path.join(queue, name), queued)
    standInPrefetcher(queue, identity)
    const served = await foreground(['fetch', ...storageArgs, name, 'pg_wal/RECOVERYXLOG'], env, workDir)
    expect(served).toMatchObject({code: 0, stdout: `Restored ${name} from the prefetch queue (dbb-wal)\n`})
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(queued)).toBe(true)
    expect(fsSync.existsSync(path.join(queue, name))).toBe(false)
    expect(await fs.readFile(path.join(queue, 'wanted'), 'utf8')).toBe(`${name}\n`)
    await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))

    // Only a killed prefetcher's partial download is queued: never handed over; Node reads storage.
    const archived = randomBytes(128 * 1024)
    await fs.mkdir(path.join(storeDir, 'wal'))
    await fs.writeFile(path.join(storeDir, 'wal', `${name}.gz`), gzipSync(archived))
    await fs.writeFile(path.join(queue, `${name}.dbb-partial`), queued.subarray(0, 1000))
    const fromStorage = await foreground(['fetch', ...storageArgs, name, 'pg_wal/RECOVERYXLOG'], env, workDir)
    expect(fromStorage.code).toBe(0)
    expect(fromStorage.stdout).not.toContain('(dbb-wal)')
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(archived)).toBe(true)

    // Not queued and not archived: "not in archive" (1) only because storage said so.
    const missing = await foreground(['fetch', ...storageArgs, '000000010000000000000042', 'pg_wal/RECOVERYXLOG'], env, workDir)
    expect(missing.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    // A queue of another archive is never served.
    await fs.writeFile(path.join(queue, name), queued)
    const otherArchive = await foreground(['fetch', '--storage', 'local', '--local-dir', `${storeDir}-other`, name, 'pg_wal/RECOVERYXLOG'], env, workDir)
    expect(otherArchive.code).toBeGreaterThan(125)
    expect(otherArchive.stdout).not.toContain('(dbb-wal)')
  }, 60_000)

  it('fetch into a pg_wal on another filesystem: mv copies the queued segment whole; a copy that fails (pg_wal full) is fatal, never "not in archive"', async () => {
    if (!isRoot) throw new Error('this test mounts a small tmpfs as pg_wal: run the suite as root, as CI does')
    const storageArgs = ['--storage', 'local', '--local-dir', storeDir]
    const identity = storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir})
    const queue = queueDirFor(spoolDir, identity)
    await fs.mkdir(queue, {recursive: true})
    standInPrefetcher(queue, identity)
    const pgWal = path.join(workDir, 'pg_wal')
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', pgWal])
    try {
      const fits = randomBytes(512 * 1024)
      await fs.writeFile(path.join(queue, name), fits)
      const served = await foreground(['fetch', ...storageArgs, name, 'pg_wal/RECOVERYXLOG'], {WAL_SPOOL_DIR: spoolDir}, workDir)
      expect(served).toMatchObject({code: 0, stdout: `Restored ${name} from the prefetch queue (dbb-wal)\n`})
      expect((await fs.readFile(path.join(pgWal, 'RECOVERYXLOG'))).equals(fits)).toBe(true)
      expect(fsSync.existsSync(path.join(queue, name))).toBe(false)
      await fs.rm(path.join(pgWal, 'RECOVERYXLOG'))

      // Larger than the filesystem: mv's copy fails, Node's copy fails too, and the exit says "fatal".
      await fs.writeFile(path.join(queue, name), randomBytes(2 * 1024 * 1024))
      const full = await foreground(['fetch', ...storageArgs, name, 'pg_wal/RECOVERYXLOG'], {WAL_SPOOL_DIR: spoolDir}, workDir)
      expect(full.code).toBe(EXIT_WAL_FETCH_FATAL)
      expect(full.stderr).toMatch(/ENOSPC|no space/i)
      expect(full.stdout).not.toContain('(dbb-wal)')
    } finally {
      execFileSync('umount', [pgWal])
    }
  }, 60_000)

  it('fetch with storage down, or a Node that cannot start, is fatal (> 125), never "not in archive"', async () => {
    const port = await freePort()
    const secret = 'prefetch-log-secret-7c1e9a04'
    const s3Down = {STORAGE_BACKEND: 's3', S3_ENDPOINT: `http://127.0.0.1:${port}`, S3_BUCKET: 'wal', S3_FORCE_PATH_STYLE: 'true', AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: secret, AWS_REGION: 'us-east-1', WAL_SPOOL_DIR: spoolDir}
    const down = await foreground(['fetch', name, 'pg_wal/RECOVERYXLOG'], s3Down, workDir)
    expect(down.code).toBe(EXIT_WAL_FETCH_FATAL)
    expect(down.stderr).toMatch(/ECONNREFUSED/)
    // The prefetcher that fetch started met the same refusal; its log (WAL_SPOOL_DIR/prefetch.log)
    // says so, and holds no credential although the process has them all.
    const prefetchLog = path.join(spoolDir, 'prefetch.log')
    await waitFor('the prefetcher to log the refused connection', async () => ((await fs.readFile(prefetchLog, 'utf8').catch(() => '')).includes('ECONNREFUSED') ? true : undefined))
    expect(await fs.readFile(prefetchLog, 'utf8')).not.toContain(secret)
    expect(fsSync.existsSync(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).toBe(false)

    const noNode = await foreground(['fetch', '--storage', 'local', '--local-dir', storeDir, name, 'pg_wal/RECOVERYXLOG'], {DBB_NODE: path.join(workDir, 'no-such-node')}, workDir)
    expect(noNode.code).toBeGreaterThan(125)
    // Sourced (dbb restore's restore_command): the same two answers.
    const sourcedDown = await sourcedFetch([], name, 'pg_wal/RECOVERYXLOG', s3Down, workDir)
    expect(sourcedDown.code).toBe(EXIT_WAL_FETCH_FATAL)
    expect(sourcedDown.stderr).toMatch(/ECONNREFUSED/)
    const sourcedNoNode = await sourcedFetch(['--storage', 'local', '--local-dir', storeDir], name, 'pg_wal/RECOVERYXLOG', {}, workDir, path.join(workDir, 'no-such-node'))
    expect(sourcedNoNode.code).toBeGreaterThan(125)
    // The script itself missing (dbb moved, or the server in a container without it) or not sh: a
    // plain `.` would exit 2 ("not in archive": recovery would end here); dbb restore's form is fatal.
    const garbled = path.join(workDir, 'dbb-wal-garbled')
    await fs.writeFile(garbled, 'if then fi\n')
    for (const script of [path.join(workDir, 'no-such-dbb-wal'), garbled, workDir]) {
      const broken = await sourcedFetch(['--storage', 'local', '--local-dir', storeDir], name, 'pg_wal/RECOVERYXLOG', {}, workDir, process.execPath, script)
      expect(broken.code).toBe(EXIT_WAL_FETCH_FATAL)
    }

    expect(fsSync.existsSync(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).toBe(false)
  }, 60_000)
})

/**
 * The end of the archive without a Node start: a fetch of a file that is not queued asks the
 * running prefetcher (a real `dbb wal prefetch`), which asks storage after reading the question.
 * "Not in archive" (1) comes only from that fresh answer; an archive that grew is served; a read
 * error is never "absent".
 */
/**
 * restore_command as dbb restore writes it: bin/dbb-wal sourced into PostgreSQL's sh (one program
 * less per segment), its Node named in the command. `%f` and `%p` are put in as PostgreSQL does.
 */
function sourcedFetch(storageArgs: string[], name: string, destination: string, env: Record<string, string | undefined>, cwd: string, node = process.execPath, script = FOREGROUND): Promise<CliResult> {
  const command = walForegroundFetchCommand(node, script, storageArgs).replace('%f', name).replace('%p', destination)
  return collect(spawn('/bin/sh', ['-c', command], {env: cliEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe']}))
}

describe.each([
  ['run by the sh', false],
  ['sourced, as dbb restore writes restore_command', true],
])('bin/dbb-wal asking the prefetcher (%s)', (_form, sourced) => {
  let workDir: string
  let storeDir: string
  let spoolDir: string
  const segment = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`
  const contents = new Map<number, Buffer>()

  beforeEach(async () => {
    workDir = await tempDir('dbb-shask-work-')
    storeDir = path.join(workDir, 'store')
    spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(path.join(workDir, 'pg_wal'), {recursive: true})
    await fs.mkdir(path.join(storeDir, 'wal'), {recursive: true})
    for (let n = 1; n <= 3; n++) await archive(n)
  })

  afterEach(async () => {
    await stopLockHolder(path.join(queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir})), 'uploader.pid'))
    await fs.rm(workDir, {recursive: true, force: true})
  })

  async function archive(n: number): Promise<void> {
    contents.set(n, randomBytes(64 * 1024))
    await fs.writeFile(path.join(storeDir, 'wal', `${segment(n)}.gz`), gzipSync(contents.get(n)!))
  }

  const fetch = (name: string) =>
    sourced
      ? sourcedFetch(['--storage', 'local', '--local-dir', storeDir], name, 'pg_wal/RECOVERYXLOG', {WAL_SPOOL_DIR: spoolDir, WAL_PREFETCH: '2'}, workDir)
      : foreground(['fetch', '--storage', 'local', '--local-dir', storeDir, name, 'pg_wal/RECOVERYXLOG'], {WAL_SPOOL_DIR: spoolDir, WAL_PREFETCH: '2'}, workDir)
  const delivered = () => fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))

  it('answers "not in archive" from a fresh storage answer, serves what arrived since, and never turns a read error into "absent"; a SIGKILLed prefetcher hands over nothing partial', async () => {
    // The first fetch goes to Node (no prefetcher yet), which starts the prefetcher.
    const first = await fetch(segment(1))
    expect(first.code).toBe(0)
    expect(first.stdout).not.toContain('(dbb-wal)')
    expect((await delivered()).equals(contents.get(1)!)).toBe(true)
    // The prefetcher it started (detached) holds the queue and has published its identity by the
    // time that fetch returned, so PostgreSQL's next request is the sh's, not a second Node start.
    const queue = queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
    const started = Number((await fs.readFile(path.join(queue, 'uploader.pid'), 'utf8')).split('\n')[0])
    expect(() => process.kill(started, 0)).not.toThrow()
    // Published under its own lock: the archive's identity line, then the prefetcher's pid and start time.
    expect(await fs.readFile(path.join(queue, 'identity'), 'utf8')).toBe(`${identityLine(storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))}\n${started} ${processStartTime(started)}\n`)
    // It runs below PostgreSQL's priority on every thread (niceness: field 19 of /proc/<pid>/task/<tid>/stat).
    const niceness = await Promise.all(
      (await fs.readdir(`/proc/${started}/task`)).map(async (thread) => Number((await fs.readFile(`/proc/${started}/task/${thread}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ')[16])),
    )
    expect(niceness.length).toBeGreaterThan(1)
    expect(new Set(niceness)).toEqual(new Set([PREFETCH_NICENESS]))
    await waitFor('the prefetcher', async () => (fsSync.existsSync(path.join(queue, segment(3))) ? true : undefined))
    for (const n of [2, 3]) {
      const served = await waitFor(`segment ${n} from the queue`, async () => {
        const result = await fetch(segment(n))
        return result.code === 0 ? result : undefined
      })
      expect(served.stdout).toContain('(dbb-wal)')
      expect((await delivered()).equals(contents.get(n)!)).toBe(true)
    }

    // Past the end of the archive: storage's answer to this request, through the prefetcher.
    const end = await fetch(segment(4))
    expect(end.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect(end.stderr).toContain('storage answered the prefetcher after this request')
    const history = await fetch('00000002.history')
    expect(history.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect(history.stderr).toContain('storage answered the prefetcher after this request')

    // The archive grew (a standby, or a late upload): the earlier "absent" is never reused.
    await archive(4)
    const grown = await fetch(segment(4))
    expect(grown.code).toBe(0)
    expect((await delivered()).equals(contents.get(4)!)).toBe(true)
    await fs.writeFile(path.join(storeDir, 'wal', '00000002.history.gz'), gzipSync('1	0/5000000	no recovery target specified\n'))
    const historyNow = await fetch('00000002.history')
    expect(historyNow).toMatchObject({code: 0, stdout: 'Restored 00000002.history from the prefetch queue (dbb-wal)\n'})

    // A read error (the archived object is a directory: EISDIR) is not "absent": the prefetcher
    // answers "failed", Node asks storage itself and exits fatal.
    await fs.mkdir(path.join(storeDir, 'wal', `${segment(6)}.gz`))
    const unreadable = await fetch(segment(6))
    expect(unreadable.code).toBe(EXIT_WAL_FETCH_FATAL)

    // SIGKILL of the prefetcher mid-download: the partial file is never handed over; the fetch goes
    // to Node and storage (exact bytes), which starts a new prefetcher that the sh uses again.
    await fs.rm(path.join(storeDir, 'wal', `${segment(6)}.gz`), {recursive: true})
    await archive(6)
    contents.set(7, randomBytes(48 * 1024 * 1024))
    await fs.writeFile(path.join(storeDir, 'wal', `${segment(7)}.gz`), gzipSync(contents.get(7)!, {level: 1}))
    await archive(8)
    const lockFile = path.join(queue, 'uploader.pid')
    const sixth = await waitFor('segment 6 through the sh', async () => {
      const result = await fetch(segment(6))
      return result.code === 0 && result.stdout.includes('(dbb-wal)') ? result : undefined
    })
    expect((await delivered()).equals(contents.get(6)!)).toBe(true)
    expect(sixth.code).toBe(0)
    const prefetcher = Number((await fs.readFile(lockFile, 'utf8')).split('\n')[0])
    // The download's own temporary file: `<name>.<pid>-<n>.dbb-partial`.
    const downloading = async () => (await fs.readdir(queue)).some((entry) => entry.startsWith(`${segment(7)}.`) && entry.endsWith('.dbb-partial'))
    await waitFor('segment 7 being downloaded', async () => ((await downloading()) ? true : undefined), 30_000)
    process.kill(prefetcher, 'SIGKILL')
    expect(fsSync.existsSync(path.join(queue, segment(7)))).toBe(false)
    const afterKill = await fetch(segment(7))
    expect(afterKill.code).toBe(0)
    expect(afterKill.stdout).not.toContain('(dbb-wal)')
    expect((await delivered()).equals(contents.get(7)!)).toBe(true)
    const next = await waitFor('segment 8 through the sh, from a new prefetcher', async () => {
      const result = await fetch(segment(8))
      return result.code === 0 && result.stdout.includes('(dbb-wal)') ? result : undefined
    })
    expect(next.code).toBe(0)
    expect((await delivered()).equals(contents.get(8)!)).toBe(true)
  }, 180_000)

  it('serves a queue only under the lock of the prefetcher that published it: not between a new lock and its clean-up, not to a pid another process reuses', async () => {
    const identity = storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir})
    const queue = queueDirFor(spoolDir, identity)
    await fs.mkdir(queue, {recursive: true})
    const leftover = randomBytes(64 * 1024)
    const fromStorageOnly = async (why: string) => {
      await fs.writeFile(path.join(queue, segment(1)), leftover)
      const result = await fetch(segment(1))
      expect({why, code: result.code, sh: result.stdout.includes('(dbb-wal)')}).toEqual({why, code: 0, sh: false})
      expect((await delivered()).equals(contents.get(1)!)).toBe(true)
      await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))
    }

    // A new prefetcher (this process stands in) took the lock; the identity file is still the one a
    // killed prefetcher published, and the queue still holds what that one downloaded.
    await fs.writeFile(path.join(queue, 'identity'), identityFileText(identityLine(identity), {pid: 999_999_999, startTime: '1'}))
    await fs.writeFile(path.join(queue, 'uploader.pid'), `${process.pid}\n\n${processStartTime(process.pid)}\n`)
    await fromStorageOnly('identity published under the previous lock')
    // The lock and the identity agree, but the pid is now another process's (its start time differs).
    await fs.writeFile(path.join(queue, 'uploader.pid'), `${process.pid}\n\n1\n`)
    await fs.writeFile(path.join(queue, 'identity'), identityFileText(identityLine(identity), {pid: process.pid, startTime: '1'}))
    await fromStorageOnly('pid reused')
    // Published under the live holder's own lock: served from the queue (what the stand-in queued).
    standInPrefetcher(queue, identity)
    await fs.writeFile(path.join(queue, segment(1)), leftover)
    const served = await fetch(segment(1))
    expect(served.code).toBe(0)
    expect(served.stdout).toContain('(dbb-wal)')
    expect((await delivered()).equals(leftover)).toBe(true)
  }, 60_000)

  it("a replay's first request is answered by the prefetcher it starts, not by a second load of dbb: storage's absent is 1, a .history in the archive is delivered whole, a read error is fatal", async () => {
    const queue = queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
    const stopPrefetcher = async () => {
      await stopLockHolder(path.join(queue, 'uploader.pid'))
      await fs.rm(queue, {recursive: true, force: true})
    }

    // No prefetcher runs: Node starts one and asks it (the answer names the prefetcher; the full
    // path, which loads the config and storage itself, says nothing of it).
    const absent = await fetch('00000002.history')
    expect(absent.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    expect(absent.stderr).toContain('storage answered the prefetcher after this request')
    expect(fsSync.existsSync(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).toBe(false)

    await stopPrefetcher()
    const history = Buffer.from('1\t0/3000000\tno recovery target specified\n')
    await fs.writeFile(path.join(storeDir, 'wal', '00000002.history.gz'), gzipSync(history))
    const present = await fetch('00000002.history')
    expect(present).toMatchObject({code: 0, stdout: 'Restored 00000002.history from the prefetch queue\n'})
    expect((await delivered()).equals(history)).toBe(true)
    await fs.rm(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))

    // A damaged copy in the archive: the prefetcher answers "failed", Node asks storage itself,
    // and the exit is fatal (never "not in archive").
    await stopPrefetcher()
    await fs.writeFile(path.join(storeDir, 'wal', '00000003.history.gz'), Buffer.from('not gzip at all'))
    const damaged = await fetch('00000003.history')
    expect(damaged.code).toBe(EXIT_WAL_FETCH_FATAL)
    expect(fsSync.existsSync(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).toBe(false)
  }, 60_000)

  it("a replay's first request, the .history probe, has the first segment backup_label names queued before PostgreSQL asks for it", async () => {
    // What pg_basebackup writes (PostgreSQL runs restore_command in the data directory, here workDir).
    await fs.writeFile(path.join(workDir, 'backup_label'), `START WAL LOCATION: 0/1000028 (file ${segment(1)})\nCHECKPOINT LOCATION: 0/1000060\nBACKUP METHOD: streamed\n`)
    const history = await fetch('00000002.history')
    expect(history.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    const queue = queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
    // Queued without a request for it, and the read-ahead after it runs from its size.
    await waitFor('the first segment and the next, queued unasked', async () => (fsSync.existsSync(path.join(queue, segment(1))) && fsSync.existsSync(path.join(queue, segment(2))) ? true : undefined))
    for (const n of [1, 2, 3]) {
      const served = await fetch(segment(n))
      expect(served).toMatchObject({code: 0, stdout: `Restored ${segment(n)} from the prefetch queue (dbb-wal)\n`})
      expect((await delivered()).equals(contents.get(n)!)).toBe(true)
    }
  }, 60_000)

  it('the fetch that starts a prefetcher waits for it only so long: one that cannot start changes no answer', async () => {
    // The queue's parent is a file: the prefetcher exits at its mkdir, and is never "running".
    await fs.mkdir(spoolDir)
    await fs.writeFile(path.join(spoolDir, 'fetch-queue'), 'not a directory\n')
    const startedAt = Date.now()
    const history = await fetch('00000002.history')
    expect(history.code).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    // Bounded by PREFETCHER_READY_WAIT_MS (plus a Node start), not by a prefetcher that never comes.
    expect(Date.now() - startedAt).toBeLessThan(PREFETCHER_READY_WAIT_MS + 20_000)
    await fs.writeFile(path.join(storeDir, 'wal', '00000002.history.gz'), gzipSync('1\t0/5000000\tno recovery target specified\n'))
    const present = await fetch('00000002.history')
    expect(present.code).toBe(0)
    expect((await delivered()).toString()).toBe('1\t0/5000000\tno recovery target specified\n')
  }, 60_000)
})

/**
 * The sh foreground with a real PostgreSQL: pgbench writes through archive_command
 * `dbb-wal push --async %p`, every segment is stored, and a base-backup restore (whose
 * restore_command is dbb-wal too) replays exactly the rows written, with segments served from the
 * prefetch queue by the sh.
 */
describe('bin/dbb-wal with a real PostgreSQL', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let spoolDir: string
  let fetchSpool: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-shfg-store-')
    spoolDir = await makeServerOwnedDir('dbb-shfg-spool-')
    fetchSpool = await makeServerOwnedDir('dbb-shfg-fetch-')
    cluster = await startPostgres({
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        archive_command: `'BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} DBB_NODE=${process.execPath} ${FOREGROUND} push --async %p'`,
      },
    })
  })

  afterAll(async () => {
    delete process.env.WAL_SPOOL_DIR
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
    await cluster?.destroy()
    for (const dir of [storeDir, spoolDir, fetchSpool]) await fs.rm(dir, {recursive: true, force: true})
  })

  it('archives pgbench WAL through the sh foreground and restores the exact rows', async () => {
    const db = cluster!
    const pgEnv = {...process.env, PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGPASSWORD: db.password}
    await run(path.join(db.binDir, 'pgbench'), ['-i', '-q', '-s', '2', 'postgres'], {env: pgEnv})
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})
    expect(backup.code).toBe(0)
    const first = (JSON.parse(backup.stdout) as {metadata: {firstWalSegment: string}}).metadata.firstWalSegment
    for (let round = 0; round < 6; round++) {
      await run(path.join(db.binDir, 'pgbench'), ['-n', '-c', '2', '-t', '2000', 'postgres'], {env: pgEnv})
      await db.psql('SELECT pg_switch_wal()')
    }

    const last = await db.psql('SELECT pg_walfile_name(pg_switch_wal())')
    await waitFor('the last segment archived', async () => ((await db.psql(`SELECT coalesce(last_archived_wal, '') >= '${last}' FROM pg_stat_archiver`)) === 't' ? true : undefined), 120_000)
    expect(await db.psql('SELECT failed_count FROM pg_stat_archiver')).toBe('0')
    const expected = await db.psql(ROWS_DIGEST)
    await db.stop()

    // Every segment from the base backup's first to the last one archived is in storage.
    const stored = new Set((await fs.readdir(path.join(storeDir, 'wal'))).filter((entry) => /^[0-9A-F]{24}\.gz$/.test(entry)).map((entry) => entry.slice(0, 24)))
    const number = (segment: string) => Number.parseInt(segment.slice(16), 16) + Number.parseInt(segment.slice(8, 16), 16) * 256
    for (let n = number(first); n <= number(last); n++) {
      expect(stored).toContain(`00000001${Math.floor(n / 256).toString(16).toUpperCase().padStart(8, '0')}${(n % 256).toString(16).toUpperCase().padStart(8, '0')}`)
    }

    const log = await fs.readFile(path.join(db.baseDir, 'server.log'), 'utf8')
    expect(log).toMatch(/Already stored by the uploader: [0-9A-F]{24} \(dbb-wal\)/)

    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(restore.code).toBe(0)
    expect(await fs.readFile(path.join(db.dataDir, 'postgresql.auto.conf'), 'utf8')).toContain(`restore_command = 'set -- fetch --storage local`)
    await fs.writeFile(path.join(db.baseDir, 'server.log'), '')
    process.env.WAL_SPOOL_DIR = fetchSpool
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql(ROWS_DIGEST)).toBe(expected)
    const replayLog = await fs.readFile(path.join(db.baseDir, 'server.log'), 'utf8')
    expect(replayLog).toMatch(/Restored [0-9A-F]{24} from the prefetch queue \(dbb-wal\)/)
    await stopLockHolder(path.join(queueDirFor(fetchSpool, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir})), 'uploader.pid'))
  }, 300_000)
})
