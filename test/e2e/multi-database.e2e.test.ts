import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {Client} from 'pg'

import {decodeDatabaseName, parseBackupId} from '../../src/backup/naming'
import {runCli, startCli, collect, tempDir} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'

interface Part {
  database: string | null
  status: string
  backupId: string | null
  error: string | null
}

interface RunJson {
  status: string
  exitCode: number
  globals: Part | null
  databases: Part[]
}

const listed = async (dir: string, args: string[] = []) => {
  const result = await runCli(['backup', 'list', '--json', ...args], {BACKUP_LOCAL_DIR: dir})
  expect(result.code).toBe(0)
  return (JSON.parse(result.stdout) as {id: string; status: string; database: string; type: string}[])
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Seeds a source server: roles with a membership, and databases whose names need encoding in ids. */
async function seedSource(cluster: PgCluster): Promise<void> {
  await cluster.psql(`CREATE ROLE readers NOLOGIN; CREATE ROLE alice LOGIN PASSWORD 'alice-source-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-source-pw'; GRANT readers TO bob`)
  for (const name of ['app', '"my_bill"', '"café"', 'locked']) await cluster.psql(`CREATE DATABASE ${name}`)
  await cluster.psql(`ALTER DATABASE app OWNER TO alice`)
  await cluster.psql(`CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g; ALTER TABLE items OWNER TO alice; GRANT SELECT ON items TO readers`, 'app')
  await cluster.psql(`CREATE TABLE invoices (id int PRIMARY KEY, amount numeric); INSERT INTO invoices SELECT g, g * 1.5 FROM generate_series(1, 300) g`, 'my_bill')
  await cluster.psql(`CREATE TABLE crème (id int); INSERT INTO crème VALUES (1), (2), (3)`, 'café')
  await cluster.psql(`CREATE TABLE secret (id int)`, 'locked')
}

describe('several databases per run (DB_NAMES), globals, restore onto a new server (real PostgreSQL, local storage)', () => {
  let source: PgCluster
  let dir: string
  let env: Record<string, string>

  beforeAll(async () => {
    source = await startPostgres()
    await seedSource(source)
  }, 60_000)

  afterAll(async () => {
    await source?.destroy()
  })

  beforeEach(async () => {
    dir = await tempDir()
    env = {...source.dbbEnv('postgres'), BACKUP_LOCAL_DIR: dir}
  })

  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('backs up each database with its own id, and the globals once; names with "_" and non-ASCII round-trip through ids, list --db and latest', async () => {
    const result = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'app, my_bill,café'})
    expect(result.code).toBe(0)
    const run = JSON.parse(result.stdout) as RunJson
    expect(run.status).toBe('succeeded')
    expect(run.databases.map((part) => [part.database, part.status])).toEqual([['app', 'succeeded'], ['my_bill', 'succeeded'], ['café', 'succeeded']])
    expect(run.globals?.backupId).toMatch(/^backup_-globals_\d{8}T\d{6}Z\.sql\.gz$/)
    const ids = Object.fromEntries(run.databases.map((part) => [part.database, part.backupId as string]))
    expect(ids.app).toMatch(/^backup_app_\d{8}T\d{6}Z\.sql\.gz$/)
    expect(ids.my_bill).toMatch(/^backup_my-5fbill_\d{8}T\d{6}Z\.sql\.gz$/)
    expect(ids['café']).toMatch(/^backup_caf-c3-a9_\d{8}T\d{6}Z\.sql\.gz$/)
    for (const [database, id] of Object.entries(ids) as [string, string][]) {
      const prefix = parseBackupId(id)?.prefix as string
      expect(decodeDatabaseName(prefix.slice(prefix.lastIndexOf('_') + 1))).toBe(database)
    }

    // Everything is listed, and per database with --db; each sidecar names its database.
    const all = await listed(dir)
    expect(all.map((entry) => entry.status)).toEqual(['ok', 'ok', 'ok', 'ok'])
    expect(all.find((entry) => entry.type === 'globals')?.id).toBe(run.globals?.backupId)
    for (const database of ['app', 'my_bill', 'café']) {
      const mine = await listed(dir, ['--db', database])
      expect(mine.map((entry) => [entry.id, entry.database])).toEqual([[ids[database], database]])
    }

    // `latest` per database: a second run of café alone is café's latest, app's stays.
    const again = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'café', BACKUP_GLOBALS: 'false'})
    expect(again.code).toBe(0)
    const second = (JSON.parse(again.stdout) as RunJson).databases[0].backupId as string
    expect(second).not.toBe(ids['café'])
    expect((await listed(dir, ['--db', 'café'])).map((entry) => entry.id)).toEqual([second, ids['café']])

    // Without --db, `latest` is no database's: not found (exit 1), naming the databases and the flag.
    const unnamed = await runCli(['restore', 'latest', '--target-db', 'cafe_copy', '--force'], env)
    expect(unnamed.code).toBe(1)
    expect(unnamed.stderr).toMatch(/databases taken with DB_NAMES \(app, café, my_bill\): name one with --db NAME/)

    const restored = await runCli(['restore', 'latest', '--db', 'café', '--target-db', 'cafe_copy', '--force', '--json'], env)
    expect(restored.code).toBe(0)
    expect(JSON.parse(restored.stdout).id).toBe(second)
    expect(await source.psql('SELECT count(*) FROM crème', 'cafe_copy')).toBe('3')
    const billing = await runCli(['restore', 'latest', '--db', 'my_bill', '--target-db', 'bill_copy', '--force', '--json'], env)
    expect(billing.code).toBe(0)
    expect(JSON.parse(billing.stdout).id).toBe(ids.my_bill)
    expect(await source.psql('SELECT count(*), sum(amount) FROM invoices', 'bill_copy')).toBe('300|67725.0')

    // Retention per database: BACKUPS_TO_RETAIN=1 on a third café run drops café's older backups only.
    const third = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'café', BACKUP_GLOBALS: 'false', BACKUPS_TO_RETAIN: '1'})
    expect(third.code).toBe(0)
    const left = await listed(dir)
    expect(left.filter((entry) => entry.database === 'café')).toHaveLength(1)
    expect(left.filter((entry) => entry.database === 'app').map((entry) => entry.id)).toEqual([ids.app])
  }, 120_000)

  it('a database the role may not CONNECT to, and an unknown one, fail their own part: the others are stored, nothing partial is listed, exit 3; the next run is OK', async () => {
    await source.psql(`CREATE ROLE backup_user LOGIN PASSWORD 'backup-user-pw' IN ROLE pg_read_all_data; REVOKE CONNECT ON DATABASE locked FROM PUBLIC`)
    const asBackupUser = {...env, DB_USER: 'backup_user', DB_PASSWORD: 'backup-user-pw', GLOBALS_NO_ROLE_PASSWORDS: 'true'}
    const result = await runCli(['backup', 'run', '--json'], {...asBackupUser, DB_NAMES: 'locked,app,nosuchdb'})
    expect(result.code).toBe(3)
    const run = JSON.parse(result.stdout) as RunJson
    expect(run).toMatchObject({status: 'partial', exitCode: 3})
    expect(run.globals?.status).toBe('succeeded')
    const byName = Object.fromEntries(run.databases.map((part) => [part.database, part]))
    expect(byName.locked).toMatchObject({status: 'failed', backupId: null})
    expect(byName.locked.error).toMatch(/permission denied for database "locked"|not have CONNECT privilege/)
    expect(byName.nosuchdb.error).toContain('database "nosuchdb" does not exist')
    expect(byName.app.status).toBe('succeeded')
    expect(result.stderr).toContain('2 of 4 backup(s) of this run failed')
    expect(result.stderr).not.toContain('backup-user-pw')

    expect((await listed(dir)).map((entry) => entry.id).sort()).toEqual([run.globals?.backupId, byName.app.backupId].sort())
    // Nothing of the failed databases is in storage at all (no dump, no claim, no partial file).
    expect((await fs.readdir(dir)).filter((name) => name.startsWith('backup_locked') || name.startsWith('backup_nosuchdb'))).toEqual([])
    // The globals without passwords say so in their sidecar.
    const sidecar = JSON.parse(await fs.readFile(path.join(dir, `${run.globals?.backupId}.meta.json`), 'utf8'))
    expect(sidecar).toMatchObject({type: 'globals', noRolePasswords: true, format: 'plain'})

    await source.psql('GRANT CONNECT ON DATABASE locked TO backup_user')
    const next = await runCli(['backup', 'run', '--json'], {...asBackupUser, DB_NAMES: 'locked,app'})
    expect(next.code).toBe(0)
    expect((JSON.parse(next.stdout) as RunJson).databases.every((part) => part.status === 'succeeded')).toBe(true)

    // Without --no-role-passwords a role that may not read pg_authid fails the globals, told what to set; app is still stored.
    // (pg_read_all_data may read pg_authid, so this is another role, reading app through readers.)
    await source.psql(`CREATE ROLE plain_user LOGIN PASSWORD 'plain-user-pw' IN ROLE readers`)
    const denied = await runCli(['backup', 'run', '--json'], {...env, DB_USER: 'plain_user', DB_PASSWORD: 'plain-user-pw', DB_NAMES: 'app'})
    expect(denied.code).toBe(3)
    expect((JSON.parse(denied.stdout) as RunJson).globals?.error).toContain('GLOBALS_NO_ROLE_PASSWORDS=true')
    // The failed globals left nothing: the two earlier globals are listed, and no file of any failed part remains.
    expect((await listed(dir)).filter((entry) => entry.type === 'globals')).toHaveLength(2)
    expect((await fs.readdir(dir)).filter((name) => name.endsWith('.partial'))).toEqual([])
  }, 120_000)

  it('a pg_dump killed mid-stream fails its database only; SIGKILL of dbb between two databases leaves the first listed and nothing of the second', async () => {
    // my_bill's pg_dump blocks on a lock, then its session is terminated: pg_dump fails mid-dump.
    const release = await holdTableLock(source, 'my_bill', 'invoices')
    const child = startCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'my_bill,app', BACKUP_GLOBALS: 'false'})
    const done = collect(child)
    try {
      // pg_dump's own session (the backup's contents record counts rows in another one, which waits too).
      await waitFor(async () => (await source.psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = 'my_bill' AND wait_event_type = 'Lock' AND application_name = 'dbb'`)) === '1', 'pg_dump to wait on the lock')
      await source.psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'my_bill' AND wait_event_type = 'Lock' AND application_name = 'dbb'`)
    } finally {
      await release()
    }

    const result = await done
    expect(result.code).toBe(3)
    const run = JSON.parse(result.stdout) as RunJson
    expect(run.databases.map((part) => [part.database, part.status])).toEqual([['my_bill', 'failed'], ['app', 'succeeded']])
    expect(run.databases[0].error).toMatch(/pg_dump/)
    expect((await listed(dir)).map((entry) => entry.database)).toEqual(['app'])
    expect((await fs.readdir(dir)).filter((name) => name.startsWith('backup_my-5fbill'))).toEqual([])

    // SIGKILL between the databases: app stored, my_bill's pg_dump in flight (blocked on the lock).
    const releaseAgain = await holdTableLock(source, 'my_bill', 'invoices')
    const killed = startCli(['backup', 'run'], {...env, DB_NAMES: 'app,my_bill', BACKUP_GLOBALS: 'false'})
    const killedDone = collect(killed)
    try {
      await waitFor(async () => (await source.psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = 'my_bill' AND wait_event_type = 'Lock' AND application_name = 'dbb'`)) === '1', 'the second pg_dump to start')
      killed.kill('SIGKILL')
      await killedDone
    } finally {
      await releaseAgain()
    }

    const afterKill = await listed(dir)
    expect(afterKill.filter((entry) => entry.database === 'app')).toHaveLength(2)
    expect(afterKill.every((entry) => entry.status === 'ok')).toBe(true)
    expect(afterKill.filter((entry) => entry.database === 'my_bill')).toEqual([])
    // The killed run's claim for my_bill is an orphan: prune removes it after ORPHAN_GRACE; the next run is OK.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const pruned = await runCli(['prune', '--db', 'my_bill', '--json'], {BACKUP_LOCAL_DIR: dir, ORPHAN_GRACE: '1s', RETENTION_DAYS: '0'})
    expect(pruned.code).toBe(0)
    expect((await fs.readdir(dir)).filter((name) => name.startsWith('backup_my-5fbill'))).toEqual([])
    const next = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'app,my_bill', BACKUP_GLOBALS: 'false'})
    expect(next.code).toBe(0)
  }, 120_000)

  it('DB_NAME alone keeps its ids; BACKUP_GLOBALS=true adds the globals beside it', async () => {
    const plain = await runCli(['backup', 'run', '--json'], {...env, DB_NAME: 'app'})
    expect(plain.code).toBe(0)
    expect(JSON.parse(plain.stdout).metadata.id).toMatch(/^backup_\d{8}T\d{6}Z\.sql\.gz$/)
    const withGlobals = await runCli(['backup', 'run', '--json'], {...env, DB_NAME: 'app', BACKUP_GLOBALS: 'true'})
    expect(withGlobals.code).toBe(0)
    const ids = (await listed(dir)).map((entry) => [entry.type, entry.database])
    // A globals sidecar's database is the one dbb connected to (DB_NAME).
    expect(ids.sort()).toEqual([['globals', 'app'], ['logical', 'app'], ['logical', 'app']].sort())
  }, 60_000)

  it('bad DB_NAMES exits 2 naming the variable, before anything is written', async () => {
    for (const value of ['app,,billing', 'app,all', 'app,app']) {
      const result = await runCli(['backup', 'run'], {...env, DB_NAMES: value})
      expect(result.code).toBe(2)
      expect(result.stderr).toContain('DB_NAMES')
    }

    expect(await fs.readdir(dir)).toEqual([])
  })

  it('restore --globals onto a new server creates the missing roles and memberships, never alters an existing role, and the database restore then succeeds', async () => {
    const backup = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'app'})
    expect(backup.code).toBe(0)

    const fresh = await startPostgres()
    try {
      // alice exists on the new server with another password; readers and bob do not.
      await fresh.psql(`CREATE ROLE alice LOGIN PASSWORD 'alice-new-server-pw' CONNECTION LIMIT 7`)
      const aliceBefore = await fresh.psql(`SELECT rolpassword || '|' || rolconnlimit FROM pg_authid WHERE rolname = 'alice'`)
      const freshEnv = {...fresh.dbbEnv('postgres'), BACKUP_LOCAL_DIR: dir}

      // Without --globals the preflight refuses: the dump names roles this server lacks.
      const refused = await runCli(['restore', 'latest', '--db', 'app', '--force'], freshEnv)
      expect(refused.code).toBe(1)
      expect(refused.stderr).toContain('readers')

      const restored = await runCli(['restore', 'latest', '--db', 'app', '--globals', '--force', '--json'], freshEnv)
      expect(restored.stderr).not.toContain('source-pw')
      expect(restored.code).toBe(0)
      const outcome = JSON.parse(restored.stdout) as {globals: {created: string[]; existing: string[]; granted: string[]}}
      // (Roles earlier tests of this file added to the source are created too.)
      expect(outcome.globals.created).toEqual(expect.arrayContaining(['bob', 'readers']))
      expect(outcome.globals.existing.sort()).toEqual(['alice', 'postgres'])
      expect(outcome.globals.granted).toContain('readers → bob')

      // The database is there with its owner and grants; bob logs in with the source's password and reads through readers.
      expect(await fresh.psql('SELECT count(*) FROM items', 'app')).toBe('500')
      expect(await fresh.psql(`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'`)).toBe('alice')
      const bob = new Client({host: fresh.host, port: fresh.port, user: 'bob', password: 'bob-source-pw', database: 'app'})
      await bob.connect()
      try {
        expect((await bob.query('SELECT count(*)::int AS n FROM items')).rows[0].n).toBe(500)
      } finally {
        await bob.end()
      }

      // alice kept her own password and attributes (pg_dumpall's ALTER ROLE alice … PASSWORD was not applied).
      expect(await fresh.psql(`SELECT rolpassword || '|' || rolconnlimit FROM pg_authid WHERE rolname = 'alice'`)).toBe(aliceBefore)

      // Again: every role exists now, nothing is created or changed.
      const again = await runCli(['restore', '--globals', '--json'], freshEnv)
      expect(again.code).toBe(0)
      expect(JSON.parse(again.stdout)).toMatchObject({created: [], granted: []})
      expect(await fresh.psql(`SELECT rolpassword || '|' || rolconnlimit FROM pg_authid WHERE rolname = 'alice'`)).toBe(aliceBefore)

      // --alter-roles needs --globals (exit 2, nothing changed) …
      const alone = await runCli(['restore', '--alter-roles'], freshEnv)
      expect(alone.code).toBe(2)
      expect(alone.stderr).toContain('--globals')
      expect(await fresh.psql(`SELECT rolpassword || '|' || rolconnlimit FROM pg_authid WHERE rolname = 'alice'`)).toBe(aliceBefore)
      // … and with it, existing alice takes the source's password and attributes; the restoring role (postgres) is left as it is.
      const postgresBefore = await fresh.psql(`SELECT coalesce(rolpassword, '') || '|' || rolsuper FROM pg_authid WHERE rolname = 'postgres'`)
      const altered = await runCli(['restore', '--globals', '--alter-roles', '--json'], freshEnv)
      expect(altered.code).toBe(0)
      expect(altered.stderr).not.toContain('source-pw')
      expect(JSON.parse(altered.stdout)).toMatchObject({created: [], altered: expect.arrayContaining(['alice'])})
      expect(JSON.parse(altered.stdout).altered).not.toContain('postgres')
      // (pg_dumpall states no CONNECTION LIMIT for the source's default -1, so alice keeps her 7: only what the globals say is applied.)
      expect(await fresh.psql(`SELECT rolconnlimit FROM pg_authid WHERE rolname = 'alice'`)).toBe('7')
      const alice = new Client({host: fresh.host, port: fresh.port, user: 'alice', password: 'alice-source-pw', database: 'app'})
      await alice.connect()
      await alice.end()
      expect(await fresh.psql(`SELECT coalesce(rolpassword, '') || '|' || rolsuper FROM pg_authid WHERE rolname = 'postgres'`)).toBe(postgresBefore)
    } finally {
      await fresh.destroy()
    }
  }, 120_000)
})
