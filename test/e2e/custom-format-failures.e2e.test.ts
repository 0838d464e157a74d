import {ChildProcess, spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * BACKUP_FORMAT=custom under attack (issue 20 item 3): bad input, a kill mid-backup, damaged
 * `.dump.*` objects, a mixed plain + custom archive, and kills mid-restore (pg_restore, dbb) with
 * --jobs: the target is old or new, nothing half-restored, and the temporary file does not stay.
 */
describe('BACKUP_FORMAT=custom failures (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let tmp: string
  let env: Record<string, string>
  let customId: string

  const q = (sql: string, database = 'postgres') => cluster.psql(sql, database)
  const ids = async () => (await fs.readdir(backupDir)).filter((name) => name.endsWith('.meta.json')).map((name) => name.slice(0, -'.meta.json'.length)).sort()
  const listed = async () => {
    const result = await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})
    return JSON.parse(result.stdout).map((backup: {id: string}) => backup.id).sort()
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 2000)
    backupDir = await tempDir()
    tmp = await tempDir('dbb-custom-tmp-')
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir, TMPDIR: tmp, BACKUP_FORMAT: 'custom'}
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    expect(backup.code).toBe(0)
    customId = JSON.parse(backup.stdout).metadata.id
  }, 60_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
    await fs.rm(tmp, {recursive: true, force: true})
  })

  it('BACKUP_FORMAT=directory (or tar) exits 2 naming the variable and the allowed values, before anything is written', async () => {
    const before = await fs.readdir(backupDir)
    for (const value of ['directory', 'tar']) {
      const result = await runCli(['backup', 'run'], {...env, BACKUP_FORMAT: value})
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/BACKUP_FORMAT.*must be plain or custom/)
    }

    expect(await fs.readdir(backupDir)).toEqual(before)
  })

  it('--jobs, --table or --schema on a plain backup exit 2 saying they need BACKUP_FORMAT=custom; the target is untouched', async () => {
    const plain = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_FORMAT: 'plain'})
    expect(plain.code).toBe(0)
    const plainId = JSON.parse(plain.stdout).metadata.id
    expect(plainId).toMatch(/\.sql\.gz$/)
    for (const extra of [['--jobs', '2'], ['--table', 'events', '--target-db', 'nope'], ['--schema', 'public', '--target-db', 'nope']]) {
      const result = await runCli(['restore', plainId, '--force', ...extra], env)
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/need a custom-format backup \(BACKUP_FORMAT=custom/)
    }

    const list = await runCli(['restore', plainId, '--list'], env)
    expect(list.code).toBe(2)
    expect(list.stderr).toMatch(/--list needs a custom-format backup/)
    expect(await q(`SELECT count(*) FROM pg_database WHERE datname = 'nope'`)).toBe('0')
    await fs.rm(path.join(backupDir, plainId))
    await fs.rm(path.join(backupDir, `${plainId}.meta.json`))
  })

  it('a SIGKILL mid-backup leaves nothing listed (pg_dump and the archive check do not keep a half-written backup alive)', async () => {
    const before = await listed()
    const locker = holdLock(cluster, 'shop', 'events')
    try {
      await waitFor(async () => (await q(`SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'events'::regclass`, 'shop')) === '1')
      const child = startCli(['backup', 'run'], env)
      const done = collect(child)
      await waitFor(async () => (await fs.readdir(backupDir)).some((name) => name.endsWith('.partial')))
      await waitFor(async () => (await q(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)) === '1')
      child.kill('SIGKILL')
      await done
    } finally {
      stop(locker)
    }

    expect(await listed()).toEqual(before)
    // The leftovers are orphans (no sidecar): prune removes them after ORPHAN_GRACE, here at once.
    const prune = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: backupDir, ORPHAN_GRACE: '1s'})
    expect(prune.code).toBe(0)
    expect(await listed()).toEqual(before)
  })

  it('a damaged .dump.gz (one flipped byte, truncated) is refused by restore and download exactly like a .sql.gz; the target is untouched', async () => {
    const original = await fs.readFile(path.join(backupDir, customId))
    const target = 'shop_damaged'
    try {
      const flipped = Buffer.from(original)
      flipped[Math.floor(flipped.length / 2)] ^= 0x01
      await fs.writeFile(path.join(backupDir, customId), flipped)
      const restore = await runCli(['restore', customId, '--force', '--target-db', target], env)
      expect(restore.code).toBe(1)
      expect(restore.stderr).toMatch(/integrity check failed|not a valid compressed stream|pg_restore/)
      const serialList = await runCli(['restore', customId, '--list'], env)
      expect(serialList.code).toBe(1)
      const out = path.join(tmp, 'x.dump.gz')
      const download = await runCli(['backup', 'download', customId, '-o', out], env)
      expect(download.code).toBe(1)
      expect(download.stderr).toMatch(/sha256/)
      await expect(fs.stat(out)).rejects.toThrow()
      const parallel = await runCli(['restore', customId, '--force', '--target-db', target, '--jobs', '2'], env)
      expect(parallel.code).toBe(1)
      expect(parallel.stderr).toMatch(/integrity check failed/)
      expect(await fs.readdir(tmp)).toEqual([])

      await fs.writeFile(path.join(backupDir, customId), original.subarray(0, original.length - 100))
      const truncated = await runCli(['restore', customId, '--force', '--target-db', target], env)
      expect(truncated.code).toBe(1)
      expect(truncated.stderr).toMatch(/truncated or replaced/)
      expect(await q(`SELECT count(*) FROM pg_database WHERE datname LIKE 'shop_damaged%'`)).toBe('0')
    } finally {
      await fs.writeFile(path.join(backupDir, customId), original)
    }
  })

  it('a mixed archive (plain + custom) lists both, restores both, and prune keeps the newest successful one whatever its format', async () => {
    const plain = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_FORMAT: 'plain'})
    expect(plain.code).toBe(0)
    const plainId = JSON.parse(plain.stdout).metadata.id
    expect(await listed()).toEqual([customId, plainId].sort())
    for (const [id, target] of [[plainId, 'mixed_plain'], [customId, 'mixed_custom']]) {
      const result = await runCli(['restore', id, '--force', '--target-db', target], env)
      expect(result.code).toBe(0)
      expect(await q(`SELECT count(*) FROM events`, target)).toBe('2000')
    }

    const newest = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    const newestId = JSON.parse(newest.stdout).metadata.id
    const prune = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: backupDir, BACKUPS_TO_RETAIN: '1', RETENTION_DAYS: '0'})
    expect(prune.code).toBe(0)
    expect(await ids()).toEqual([newestId])
    customId = newestId
  })

  /** A database whose index build sleeps only in a dbb staging database: holds pg_restore mid-restore, deterministically. */
  async function slowBackup(): Promise<string> {
    await q(`CREATE DATABASE slow`)
    await q(
      `CREATE TABLE t (id int);
       INSERT INTO t SELECT generate_series(1, 3);
       CREATE FUNCTION sleepy(n int) RETURNS int IMMUTABLE LANGUAGE sql
         AS $$ SELECT CASE WHEN current_database() LIKE '%\\_dbb\\_staging\\_%' THEN (SELECT n FROM pg_sleep(20)) ELSE n END $$;
       CREATE INDEX t_sleepy ON t (sleepy(id));`,
      'slow',
    )
    const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, DB_NAME: 'slow', BACKUP_NAME_PREFIX: 'slow'})
    expect(result.code).toBe(0)
    return JSON.parse(result.stdout).metadata.id
  }

  const sleepingInStaging = async () => (await q(`SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'slow\\_dbb\\_staging\\_%' AND wait_event = 'PgSleep'`)) !== '0'
  const endStagingSessions = () => q(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname LIKE 'slow\\_dbb\\_staging\\_%'`)
  const childrenOf = async (pid: number) => (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number)

  it('--jobs 2: pg_restore SIGKILLed mid-restore fails the restore, the target stays as it was, and the temporary directory is removed', async () => {
    const id = await slowBackup()
    await q(`INSERT INTO t VALUES (4)`, 'slow')
    const child = startCli(['restore', id, '--force', '--jobs', '2'], {...env, DB_NAME: 'slow', BACKUP_NAME_PREFIX: 'slow'})
    const done = collect(child)
    await waitFor(sleepingInStaging, 30_000)
    expect((await fs.readdir(tmp)).filter((name) => name.startsWith('dbb-restore-'))).toHaveLength(1)
    // Only the leader: dbb kills the workers it forked (its process group), or they would sleep on in staging.
    for (const pid of await childrenOf(child.pid!)) process.kill(pid, 'SIGKILL')
    const result = await done
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/pg_restore failed \(killed by SIGKILL\)/)
    expect(result.stderr).toMatch(/database "slow" was not changed/)
    expect(await q(`SELECT string_agg(id::text, ',' ORDER BY id) FROM t`, 'slow')).toBe('1,2,3,4')
    expect(await fs.readdir(tmp)).toEqual([])
    expect(await q(`SELECT count(*) FROM pg_database WHERE datname LIKE 'slow\\_dbb\\_%'`)).toBe('0')
  }, 60_000)

  it('--jobs 2: dbb SIGKILLed mid-restore leaves the target as it was; the next restore removes the temporary directory and the staging database', async () => {
    const id = (await ids()).find((name) => name.startsWith('slow_'))!
    const child = startCli(['restore', id, '--force', '--jobs', '2'], {...env, DB_NAME: 'slow', BACKUP_NAME_PREFIX: 'slow'})
    const done = collect(child)
    await waitFor(sleepingInStaging, 30_000)
    const pgRestore = await childrenOf(child.pid!)
    child.kill('SIGKILL')
    await done
    // The orphaned pg_restore (and its workers) would sleep on; a real operator's server restart or timeout ends them.
    for (const pid of pgRestore) process.kill(-pid, 'SIGKILL')
    await endStagingSessions()
    expect(await q(`SELECT string_agg(id::text, ',' ORDER BY id) FROM t`, 'slow')).toBe('1,2,3,4')
    const left = (await fs.readdir(tmp)).filter((name) => name.startsWith('dbb-restore-'))
    expect(left).toHaveLength(1)

    // The next parallel restore sweeps the dead run's directory; the index build sleeps 20 s per row
    // only in staging, so restore just the table's data with --table into a new database to keep it short.
    const next = await runCli(['restore', id, '--force', '--jobs', '2', '--table', 't', '--target-db', 'slow_copy'], {...env, DB_NAME: 'slow', BACKUP_NAME_PREFIX: 'slow'})
    expect(next.code).toBe(0)
    expect(await q(`SELECT count(*) FROM t`, 'slow_copy')).toBe('3')
    expect(await fs.readdir(tmp)).toEqual([])
    expect(await q(`SELECT count(*) FROM pg_database WHERE datname LIKE 'slow\\_dbb\\_%'`)).toBe('0')
  }, 60_000)
})

function holdLock(cluster: PgCluster, database: string, table: string): ChildProcess {
  return spawn('psql', ['-X', '-q', '-c', `BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);`], {
    env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password, PGDATABASE: database},
    stdio: 'ignore',
  })
}

function stop(child: ChildProcess) {
  if (child.exitCode === null) child.kill('SIGKILL')
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
