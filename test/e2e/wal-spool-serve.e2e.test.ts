import {ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {uploaderLock} from '../../src/wal/foreground'
import {ROOT, collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {startServeReadingAhead, stopLockHolder} from '../helpers/wal'
import {waitFor} from '../helpers/serve'

const TOKEN = 'e2e-spool-serve-token-0123456789abcdef'

/**
 * dbb serve with WAL_SPOOL_DIR: it uploads the async spool in-process and reports it in /metrics.
 * A spooled segment that conflicts with what storage holds (split-brain) stays in the spool and
 * shows as failing; the others are stored.
 */
describe('dbb serve uploads the WAL spool and reports it in /metrics', () => {
  let cluster: PgCluster
  let child: ChildProcess | undefined
  let dir: string

  beforeAll(async () => {
    cluster = await startPostgres()
  })

  afterAll(async () => {
    child?.kill('SIGKILL')
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  /** Serve uploading `spoolDir` into `storeDir`, its API on a free port, no scheduled backup in the test's time. */
  async function startServe(storeDir: string, spoolDir: string, extra: Record<string, string> = {}) {
    const port = await freePort()
    const serve = startCli(['serve'], {
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: storeDir,
      WAL_SPOOL_DIR: spoolDir,
      API_TOKEN: TOKEN,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      ...extra,
    })
    child = serve
    return {serve, port, result: collect(serve)}
  }

  it('stores spooled segments, keeps a conflicting one, and exposes dbb_wal_spool_* gauges', async () => {
    dir = await tempDir('dbb-spool-serve-')
    const storeDir = path.join(dir, 'store')
    const spoolDir = path.join(dir, 'spool')
    await fs.mkdir(path.join(dir, 'pg_wal'), {recursive: true})
    await fs.mkdir(storeDir)
    await fs.mkdir(spoolDir)
    const names = ['000000010000000000000001', '000000010000000000000002', '000000010000000000000003']
    const contents = names.map(() => randomBytes(64 * 1024))
    // Segment 2 is already archived with other content: the spooled copy conflicts.
    await fs.writeFile(path.join(dir, 'pg_wal', names[1]), randomBytes(64 * 1024))
    expect((await runCli(['wal', 'push', `pg_wal/${names[1]}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: dir})).code).toBe(0)
    for (const [index, name] of names.entries()) await fs.writeFile(path.join(spoolDir, name), contents[index])

    const {serve, port, result} = await startServe(storeDir, spoolDir)
    const metric = async (name: string) => {
      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined))?.text()
      const line = body?.split('\n').find((text) => text.startsWith(`${name}{`))
      return line === undefined ? undefined : Number(line.split(' ').at(-1))
    }

    await waitFor(async () => ((await metric('dbb_wal_spool_upload_failing')) === 1 ? true : undefined), 60_000, 'the conflict to be reported')
    await waitFor(async () => ((await metric('dbb_wal_spool_files')) === 1 ? true : undefined), 60_000, 'the other segments to be stored')
    expect(await metric('dbb_wal_spool_bytes')).toBe(64 * 1024)
    expect(await fs.readdir(spoolDir)).toContain(names[1])
    for (const index of [0, 2]) {
      expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${names[index]}.gz`))).equals(contents[index])).toBe(true)
    }

    expect(await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8')).toMatch(/possible split-brain/)
    serve.kill('SIGTERM')
    expect((await result).code).toBe(0)
    child = undefined
  }, 120_000)

  // The spool itself failing under serve (here its directory replaced by a file: ENOTDIR, where a
  // real volume gives EIO or EROFS) used to end serve with an unhandled rejection, taking its REST
  // API and scheduled backups with it. Now the uploader waits and tries again; /metrics says failing.
  it('a spool that fails under it does not end serve: the API answers, /metrics reports it failing, the error is logged once, and uploads resume once the spool is back', async () => {
    dir = await tempDir('dbb-spool-serve-')
    const storeDir = path.join(dir, 'store')
    const spoolDir = path.join(dir, 'spool')
    await fs.mkdir(storeDir)
    await fs.mkdir(spoolDir)
    const {serve, port, result} = await startServe(storeDir, spoolDir, {LOG_FORMAT: 'json'})
    const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined))?.text()
    await waitFor(async () => ((await scrape())?.includes('dbb_wal_spool_upload_failing{service="dbb"} 0') ? true : undefined), 60_000, 'serve to report the spool')

    await fs.rm(spoolDir, {recursive: true})
    await fs.writeFile(spoolDir, 'not a directory\n')
    await waitFor(async () => ((await scrape())?.includes('dbb_wal_spool_upload_failing{service="dbb"} 1') ? true : undefined), 30_000, 'the spool to be reported failing')
    // Through two retries (5 s apart): serve is alive, answers its API, and logged the failure once.
    await new Promise((resolve) => setTimeout(resolve, 11_000))
    expect([serve.exitCode, serve.signalCode]).toEqual([null, null])
    const listed = await fetch(`http://127.0.0.1:${port}/api/v1/backups`, {headers: {Authorization: `Bearer ${TOKEN}`}})
    expect(listed.status).toBe(200)
    expect((await scrape())?.match(/^dbb_wal_spool_files\{service="dbb"\} (.*)$/m)?.[1]).toMatch(/^nan$/i)

    await fs.rm(spoolDir)
    await fs.mkdir(spoolDir)
    const segment = randomBytes(64 * 1024)
    await fs.writeFile(path.join(spoolDir, '000000010000000000000007'), segment)
    await waitFor(async () => (await fs.readFile(path.join(storeDir, 'wal', '000000010000000000000007.gz')).catch(() => undefined)) ?? undefined, 60_000, 'the spooled segment to be stored')
    expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', '000000010000000000000007.gz'))).equals(segment)).toBe(true)
    await waitFor(async () => ((await scrape())?.includes('dbb_wal_spool_upload_failing{service="dbb"} 0') ? true : undefined), 30_000, 'the spool to be reported healthy again')

    serve.kill('SIGTERM')
    const {code, stderr} = await result
    child = undefined
    expect(code).toBe(0)
    const failures = stderr.split('\n').filter((line) => /"event":"wal\.spool_(uploader|lock)_failed"/.test(line))
    // One for the uploader that stopped, one for the lock it could not take again: not one per retry.
    expect(failures.length).toBeGreaterThan(0)
    expect(failures.length).toBeLessThanOrEqual(2)
    expect(stderr).not.toMatch(/unhandled|at async/i)
  }, 180_000)
})

/**
 * dbb serve with WAL_READ_AHEAD_DIR, as the server's OS user (the README's setup): it stores the
 * segments PostgreSQL marks ready before their push runs, and each push (`dbb-wal push --async`,
 * the sh) is acknowledged from serve's marker with no copy — before this setting, every push
 * beside serve copied its segment into the spool (a Node start each: ≈ 50 MB/s against ≈ 120).
 */
describe('dbb serve reads ahead the server pg_wal (WAL_READ_AHEAD_DIR)', () => {
  let cluster: PgCluster
  let storeDir: string
  let spoolDir: string
  let walDir: string
  const foreground = path.join(ROOT, 'bin', 'dbb-wal')

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-serve-ahead-store-')
    spoolDir = await makeServerOwnedDir('dbb-serve-ahead-spool-')
    // Archiving on, archive_command set only once serve runs: the segments wait in pg_wal as `.ready`.
    cluster = await startPostgres({settings: {wal_level: 'replica', archive_mode: 'on', archive_command: "''"}})
    walDir = path.join(cluster.dataDir, 'pg_wal')
    await cluster.psql('CREATE TABLE filler (payload text)')
  })

  afterAll(async () => {
    // Serve, or a detached uploader that took over from it.
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
    await cluster?.destroy()
    // The storage directory set aside by the outage test, had it failed before putting it back.
    for (const dir of [storeDir, `${storeDir}.aside`, spoolDir]) if (dir) await fs.rm(dir, {recursive: true, force: true})
  })

  const setArchiveCommand = async (command: string) => {
    await cluster.psql(`ALTER SYSTEM SET archive_command = '${command}'`)
    await cluster.psql('SELECT pg_reload_conf()')
  }

  /** Writes `count` segments' worth of rows, each closed with a switch; returns every segment now waiting (`.ready`) and its bytes. */
  const readySegments = async (count: number) => {
    for (let round = 0; round < count; round++) {
      await cluster.psql('INSERT INTO filler SELECT md5(g::text) FROM generate_series(1, 20000) g')
      await cluster.psql('SELECT pg_switch_wal()')
    }

    const ready = (await fs.readdir(path.join(walDir, 'archive_status'))).filter((entry) => entry.endsWith('.ready')).map((entry) => entry.slice(0, 24))
    return new Map(await Promise.all(ready.sort().map(async (name) => [name, await fs.readFile(path.join(walDir, name))] as const)))
  }

  /** dbb serve as the server's OS user, holding the spool and reading ahead pg_wal; `exited` is its output and exit. */
  const startServe = async () => {
    const serve = await startServeReadingAhead(cluster, {storeDir, spoolDir})
    return {...serve, exited: collect(serve.child)}
  }

  const waitArchived = async (last: string) => {
    await waitFor(async () => ((await cluster.psql(`SELECT coalesce(last_archived_wal, '') >= '${last}' FROM pg_stat_archiver`)) === 't' ? true : undefined), 120_000, `${last} to be archived`)
  }

  const expectStored = async (contents: Map<string, Buffer>) => {
    for (const [name, content] of contents) expect([name, gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${name}.gz`))).equals(content)]).toEqual([name, true])
  }

  it('acknowledges every push from its markers, and storage holds each segment byte for byte', async () => {
    const contents = await readySegments(4)
    expect(contents.size).toBeGreaterThanOrEqual(4)
    const serve = await startServe()

    await fs.writeFile(path.join(cluster.baseDir, 'server.log'), '')
    await setArchiveCommand(`BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} DBB_NODE=${process.execPath} ${foreground} push --async %p`)
    await waitArchived([...contents.keys()].at(-1)!)
    expect(await cluster.psql('SELECT failed_count FROM pg_stat_archiver')).toBe('0')
    await expectStored(contents)
    const log = await fs.readFile(path.join(cluster.baseDir, 'server.log'), 'utf8')
    // Every push was answered by serve's read-ahead: none copied its segment into the spool.
    for (const name of contents.keys()) expect([name, log.includes(`Already stored by the uploader: ${name} (dbb-wal)`)]).toEqual([name, true])
    expect(log).not.toMatch(/Queued [0-9A-F]{24} in /)
    // No detached uploader was started beside serve: the lock is still serve's.
    expect(uploaderLock(spoolDir)).toMatchObject({pid: serve.pid, readAheadDir: serve.walDir})

    // serve itself (runuser, when the test runs as root, dies of a signal it is sent rather than relaying it).
    process.kill(serve.pid, 'SIGTERM')
    expect((await serve.exited).code).toBe(0)
    await setArchiveCommand('')
  }, 240_000)

  // Storage down while serve reads ahead: its failing uploads write uploader.error, so pushes stop
  // waiting for markers and spool their segments (acknowledged durable in the spool); once storage
  // is back serve drains the spool, takes the error back, and answers pushes from its markers again.
  it('with storage down, lets pushes spool instead of waiting, then drains and reads ahead again', async () => {
    const serve = await startServe()
    const aside = `${storeDir}.aside`
    await fs.rename(storeDir, aside)
    await setArchiveCommand(`BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} DBB_NODE=${process.execPath} ${foreground} push --async %p`)
    await fs.writeFile(path.join(cluster.baseDir, 'server.log'), '')
    const during = await readySegments(3)
    await waitArchived([...during.keys()].at(-1)!)
    const log = await fs.readFile(path.join(cluster.baseDir, 'server.log'), 'utf8')
    expect(log).toMatch(/Queued [0-9A-F]{24} in /)
    expect(await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8')).toMatch(/does not exist/)

    await fs.rename(aside, storeDir)
    await waitFor(async () => ((await fs.readdir(spoolDir)).some((entry) => /^[0-9A-F]{24}$/.test(entry) || entry === 'uploader.error') ? undefined : true), 120_000, 'the spool to drain and the error to be taken back')
    await expectStored(during)
    // Serve never gave up the spool, and its read-ahead answers the next pushes again.
    expect(uploaderLock(spoolDir)).toMatchObject({pid: serve.pid, readAheadDir: serve.walDir})
    await fs.writeFile(path.join(cluster.baseDir, 'server.log'), '')
    const after = await readySegments(2)
    await waitArchived([...after.keys()].at(-1)!)
    await expectStored(after)
    const afterLog = await fs.readFile(path.join(cluster.baseDir, 'server.log'), 'utf8')
    for (const name of after.keys()) expect([name, afterLog.includes(`Already stored by the uploader: ${name} (dbb-wal)`)]).toEqual([name, true])

    process.kill(serve.pid, 'SIGTERM')
    expect((await serve.exited).code).toBe(0)
    await setArchiveCommand('')
  }, 240_000)

  // Kill dbb itself: serve SIGKILLed mid-drain, after a random delay, holding read-ahead copies and
  // uploads in flight. The pushes go on (a detached uploader takes the spool over), every segment
  // ends up stored whole, and nothing serve had half done is left in the spool.
  it.each([0, 1, 2])('SIGKILLed mid-drain (run %i), loses nothing and leaves nothing behind', async () => {
    const contents = await readySegments(6)
    const serve = await startServe()
    await setArchiveCommand(`BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} DBB_NODE=${process.execPath} ${foreground} push --async %p`)
    await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 1500)))
    process.kill(serve.pid, 'SIGKILL')
    await serve.exited

    await waitArchived([...contents.keys()].at(-1)!)
    // One more segment: its push starts an uploader if the drain ended before serve died, and an
    // uploader's start is what removes a dead one's read-ahead copies.
    const more = await readySegments(1)
    await waitArchived([...more.keys()].at(-1)!)
    // A segment acknowledged from the spool (its push found no marker) is stored once the uploader drains it.
    await waitFor(async () => ((await fs.readdir(spoolDir)).some((entry) => /^[0-9A-F]{24}$/.test(entry)) ? undefined : true), 60_000, 'the spool to drain')
    await expectStored(new Map([...contents, ...more]))
    // No serve copy is left behind.
    await waitFor(async () => ((await fs.readdir(path.join(spoolDir, 'ahead')).catch(() => [] as string[])).some((entry) => entry.split('.')[0] === String(serve.pid)) ? undefined : true), 60_000, "serve's read-ahead copies to be removed")
    await setArchiveCommand('')
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
  }, 240_000)
})
