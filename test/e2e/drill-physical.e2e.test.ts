import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, runCli, startCli} from '../helpers/cli'
import {PgCluster, freePort, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived, waitFor} from '../helpers/wal'

/**
 * Physical restore drills against real PostgreSQL 15 server binaries: archive_command = dbb wal
 * push, a base backup, then `dbb drill --type base` restores it into a private directory, replays
 * the archive on a private server (unix socket only) and reads every database.
 */
const DRILL_TEST_TIMEOUT_MS = 300_000

/** Every file under the WAL archive, with its size: the production archive before and after a drill. */
async function archiveListing(storeDir: string): Promise<string[]> {
  const names = await fs.readdir(path.join(storeDir, 'wal')).catch(() => [] as string[])
  return names.filter((name) => !name.startsWith('.')).sort()
}

/** postgres processes whose command line names the directory (a drill's private server). */
function serversIn(directory: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], {encoding: 'utf8'})
  return out.split('\n').filter((line) => /postgres/.test(line) && line.includes(directory))
}

describe('dbb drill --type base (real PostgreSQL 15 server binaries, archived WAL)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let tmpDir: string

  beforeEach(async () => {
    storeDir = await makeServerOwnedDir('dbb-physdrill-store-')
    // The drill's private directories go here (TMPDIR), so the test sees exactly what it leaves.
    tmpDir = await makeServerOwnedDir('dbb-physdrill-tmp-')
    await fs.chmod(tmpDir, 0o755)
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
  })

  afterEach(async () => {
    await cluster?.destroy()
    for (const line of serversIn(tmpDir)) process.kill(Number(line.trim().split(/\s+/)[0]), 'SIGKILL')
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(tmpDir, {recursive: true, force: true})
  })

  const env = () => ({...cluster!.dbbEnv(), BACKUP_LOCAL_DIR: storeDir, TMPDIR: tmpDir})

  async function baseBackupWithLaterWrites(): Promise<string> {
    const db = cluster!
    await db.psql('CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g')
    await db.psql('CREATE DATABASE shop')
    await db.psql('CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 10)', 'shop')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], env())
    expect(backup.code).toBe(0)
    // Written after the base backup: only replay of archived WAL brings these back.
    await db.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1001, 1500) g')
    await db.psql('CREATE TABLE after_backup AS SELECT 42 AS answer')
    await switchWalAndWaitArchived(db, storeDir)
    await db.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1501, 1600) g')
    await switchWalAndWaitArchived(db, storeDir)
    return JSON.parse(backup.stdout).metadata.id as string
  }

  it('passes on a base backup + archived WAL: rows written after the backup are replayed, nothing is archived, nothing is left', async () => {
    const id = await baseBackupWithLaterWrites()
    const before = await archiveListing(storeDir)

    const drill = await runCli(['drill', 'latest', '--type', 'base', '--json'], env())
    expect(drill.stderr).not.toContain(cluster!.password)
    expect(drill.code).toBe(0)
    const result = JSON.parse(drill.stdout)
    expect(result).toMatchObject({backupId: id, status: 'passed', checked: 'replay', differences: []})
    expect(result.restoreMs).toBeGreaterThan(0)
    const postgres = result.physical.databases.find((db: {name: string}) => db.name === 'postgres')
    // orders (1600 rows: 1000 before the backup, 600 replayed) + after_backup (1 row, created after the backup).
    expect(postgres).toEqual({name: 'postgres', tables: 2, rows: 1601})
    expect(result.physical.databases.find((db: {name: string}) => db.name === 'shop')).toEqual({name: 'shop', tables: 1, rows: 10})
    expect(result.physical.archiveEnd).toBe(before.filter((name) => /^[0-9A-F]{24}\.gz$/.test(name)).at(-1)!.replace('.gz', ''))

    // The drill sidecar and the DRILL column.
    const sidecar = JSON.parse(await fs.readFile(path.join(storeDir, `${id}.drill.json`), 'utf8'))
    expect(sidecar).toMatchObject({backupId: id, status: 'passed', checked: 'replay'})
    const list = await runCli(['backup', 'list', '--type', 'base', '--json'], env())
    expect(JSON.parse(list.stdout)[0]).toMatchObject({id, drill: {status: 'passed'}})

    // Production's archive untouched: no .history, no new segment from the drill's promotion.
    expect(await archiveListing(storeDir)).toEqual(before)
    expect((await archiveListing(storeDir)).filter((name) => name.includes('.history'))).toEqual([])
    // No server left, no directory left.
    expect(serversIn(tmpDir)).toEqual([])
    expect(await fs.readdir(tmpDir)).toEqual([])
  }, DRILL_TEST_TIMEOUT_MS)

  it('--target-time: replays up to the target only; rows committed after it are not there', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE events (id int PRIMARY KEY)')
    expect((await runCli(['backup', 'run', '--type', 'base'], env())).code).toBe(0)
    await db.psql('INSERT INTO events SELECT generate_series(1, 300)')
    const target = await db.psql('SELECT clock_timestamp()')
    await new Promise((resolve) => setTimeout(resolve, 50))
    await db.psql('INSERT INTO events SELECT generate_series(301, 400)')
    await switchWalAndWaitArchived(db, storeDir)

    const drill = await runCli(['drill', 'latest', '--type', 'base', '--target-time', target, '--json'], env())
    expect(drill.code).toBe(0)
    const result = JSON.parse(drill.stdout)
    expect(result).toMatchObject({status: 'passed', checked: 'replay'})
    expect(result.physical.databases.find((entry: {name: string}) => entry.name === 'postgres')).toEqual({name: 'postgres', tables: 1, rows: 300})
    expect(await fs.readdir(tmpDir)).toEqual([])

    const logical = await runCli(['drill', 'latest', '--target-time', target], env())
    expect(logical.code).toBe(2)
    expect(logical.stderr).toMatch(/--target-time applies to physical drills only \(--type base\)/)
  }, DRILL_TEST_TIMEOUT_MS)

  it('dbb serve with DRILL_TYPE=base: the scheduled drill is a physical one, its result in storage and /metrics; POST /api/v1/backups/<id>/drill runs one on demand', async () => {
    const id = await baseBackupWithLaterWrites()
    const port = await freePort()
    const serve = startCli(['serve'], {...env(), API_TOKEN: 'physical-drill-token-0123456789', HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port), BACKUP_SCHEDULE: '0 3 1 1 *', DRILL_INTERVAL: '7d', DRILL_TYPE: 'base'})
    const done = collect(serve)
    try {
      const sidecar = await waitFor(
        'the scheduled physical drill',
        async () => (existsSync(path.join(storeDir, `${id}.drill.json`)) ? JSON.parse(await fs.readFile(path.join(storeDir, `${id}.drill.json`), 'utf8')) : undefined),
        180_000,
      )
      expect(sidecar).toMatchObject({backupId: id, status: 'passed', checked: 'replay'})
      // The drill writes its result to storage, then stops its private server and removes it, and only
      // then serve counts it: /metrics trails the file by that clean-up.
      const metrics = await waitFor(
        'the drill counted in /metrics',
        async () => {
          const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
          return /dbb_drills_total\{outcome="passed"[^}]*\} 1/.test(text) ? text : undefined
        },
        30_000,
      )
      expect(metrics).toMatch(/dbb_drills_total\{outcome="passed"[^}]*\} 1/)

      // The same physical drill on demand over the API: POST the base backup's id, follow the job.
      const api = (route: string, init: RequestInit = {}) =>
        fetch(`http://127.0.0.1:${port}${route}`, {...init, headers: {authorization: 'Bearer physical-drill-token-0123456789'}})
      expect((await fetch(`http://127.0.0.1:${port}/api/v1/backups/${id}/drill`, {method: 'POST'})).status).toBe(401)
      const started = await api(`/api/v1/backups/${id}/drill`, {method: 'POST'})
      expect(started.status).toBe(202)
      const {jobId} = (await started.json()) as {jobId: string}
      const finished = await waitFor(
        'the API physical drill',
        async () => {
          const job = (await (await api(`/api/v1/drills/jobs/${jobId}`)).json()) as {finishedAt?: string}
          return job.finishedAt ? job : undefined
        },
        180_000,
      )
      expect(finished).toMatchObject({status: 'passed', result: {backupId: id, status: 'passed', checked: 'replay'}})
      const last = await api(`/api/v1/backups/${id}/drill`)
      expect(last.status).toBe(200)
      expect(await last.json()).toMatchObject({backupId: id, status: 'passed', checked: 'replay'})
    } finally {
      serve.kill('SIGTERM')
    }

    expect((await done).code).toBe(0)
    expect(await fs.readdir(tmpDir)).toEqual([])
  }, DRILL_TEST_TIMEOUT_MS)

  it('fails when a WAL segment in the needed range is missing, naming it; a damaged one fails too', async () => {
    const id = await baseBackupWithLaterWrites()
    const segments = (await archiveListing(storeDir)).filter((name) => /^[0-9A-F]{24}\.gz$/.test(name))
    // The segment after the backup's own WAL: past the consistency point, so recovery promotes at the gap.
    const metadata = JSON.parse(await fs.readFile(path.join(storeDir, `${id}.meta.json`), 'utf8'))
    const needed = segments.filter((name) => name.replace('.gz', '') > metadata.firstWalSegment)
    expect(needed.length).toBeGreaterThanOrEqual(2)
    const missing = needed[needed.length - 2]
    await fs.rename(path.join(storeDir, 'wal', missing), path.join(storeDir, `${missing}.aside`))

    const drill = await runCli(['drill', id, '--type', 'base', '--json'], env())
    expect(drill.code).toBe(3)
    const result = JSON.parse(drill.stdout)
    expect(result.status).toBe('failed')
    expect(result.error).toContain(`${missing.replace('.gz', '')} is missing or damaged`)
    expect(JSON.parse(await fs.readFile(path.join(storeDir, `${id}.drill.json`), 'utf8')).status).toBe('failed')
    expect(await fs.readdir(tmpDir)).toEqual([])

    // Put it back, damaged: bytes replaced by garbage of the same size.
    const size = (await fs.stat(path.join(storeDir, `${missing}.aside`))).size
    await fs.writeFile(path.join(storeDir, 'wal', missing), Buffer.alloc(size, 0x5a))
    if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', path.join(storeDir, 'wal', missing)])
    const damaged = await runCli(['drill', id, '--type', 'base', '--json'], env())
    expect({code: damaged.code, stderr: damaged.code === 3 ? '' : damaged.stderr.slice(-3000)}).toEqual({code: 3, stderr: ''})
    const damagedResult = JSON.parse(damaged.stdout)
    expect(damagedResult.status).toBe('failed')
    expect(damagedResult.error).toContain(missing.replace('.gz', ''))
    expect(serversIn(tmpDir)).toEqual([])
    expect(await fs.readdir(tmpDir)).toEqual([])
  }, DRILL_TEST_TIMEOUT_MS)

  it.each(['SIGINT', 'SIGKILL'] as const)('%s mid-replay: no server left running (at once, or after the next drill), directory removed, no sidecar claiming a pass', async (signal) => {
    const id = await baseBackupWithLaterWrites()
    const child = startCli(['drill', id, '--type', 'base'], {...env(), LOG_LEVEL: 'debug'})
    const done = collect(child)
    // Mid-replay: the private server is up (its postmaster.pid exists in the marked directory).
    const directory = await waitFor(
      'the drill server to start',
      async () => {
        for (const entry of await fs.readdir(tmpDir)) {
          if (existsSync(path.join(tmpDir, entry, 'data', 'postmaster.pid'))) return path.join(tmpDir, entry)
        }

        return undefined
      },
      120_000,
    )
    child.kill(signal)
    const interrupted = await done
    expect(interrupted.code).not.toBe(0)
    expect(existsSync(path.join(storeDir, `${id}.drill.json`))).toBe(false)
    if (signal === 'SIGINT') {
      expect(interrupted.code).toBe(1)
      expect(serversIn(directory)).toEqual([])
      expect(existsSync(directory)).toBe(false)
      return
    }

    // SIGKILL: nothing could clean up; the next drill does, and passes.
    expect(existsSync(path.join(directory, 'dbb-drill.json'))).toBe(true)
    const next = await runCli(['drill', id, '--type', 'base', '--json'], env())
    expect(next.code).toBe(0)
    expect(next.stderr).toContain('left by a physical drill that was killed')
    expect(serversIn(directory)).toEqual([])
    expect(existsSync(directory)).toBe(false)
    expect(await fs.readdir(tmpDir)).toEqual([])
  }, DRILL_TEST_TIMEOUT_MS)

  it('never touches a directory that looks like a drill directory but has no marker', async () => {
    await baseBackupWithLaterWrites()
    const foreign = path.join(tmpDir, 'dbb-drill-pgdata-notours')
    await fs.mkdir(foreign)
    await fs.writeFile(path.join(foreign, 'keep.txt'), 'mine')
    const drill = await runCli(['drill', 'latest', '--type', 'base'], env())
    expect(drill.code).toBe(0)
    expect(await fs.readFile(path.join(foreign, 'keep.txt'), 'utf8')).toBe('mine')
  }, DRILL_TEST_TIMEOUT_MS)

  it('without server binaries of the backup\'s major version: checks the bytes, says what to install, exit 1, no result; a missing DRILL_OS_USER is exit 2', async () => {
    const id = await baseBackupWithLaterWrites()
    // A backup of a PostgreSQL major version this machine has no server for.
    const sidecarFile = path.join(storeDir, `${id}.meta.json`)
    const sidecar = JSON.parse(await fs.readFile(sidecarFile, 'utf8'))
    await fs.writeFile(sidecarFile, JSON.stringify({...sidecar, pgVersion: '99.1'}))
    const drill = await runCli(['drill', id, '--type', 'base'], env())
    expect(drill.code).toBe(1)
    expect(drill.stderr).toMatch(/physical drill needs PostgreSQL 99 server binaries \(found PostgreSQL 15 only[^)]*\): apt-get install postgresql-99; checked what it can without them: .* reads back with its recorded sha256 and is a readable tar/)
    expect(existsSync(path.join(storeDir, `${id}.drill.json`))).toBe(false)
    await fs.writeFile(sidecarFile, JSON.stringify(sidecar))

    if (process.getuid?.() === 0) {
      const noUser = await runCli(['drill', id, '--type', 'base'], {...env(), DRILL_OS_USER: 'dbb_no_such_user'})
      expect(noUser.code).toBe(2)
      expect(noUser.stderr).toMatch(/PostgreSQL, which refuses to run as root; .*DRILL_OS_USER is "dbb_no_such_user", which is not a user on this system/)
      expect(await fs.readdir(tmpDir)).toEqual([])
    }
  }, DRILL_TEST_TIMEOUT_MS)
})
