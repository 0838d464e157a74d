import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {Client} from 'pg'

import {exportSnapshot} from '../../src/backup/contents-record'
import {scratchDatabaseName} from '../../src/drill/scratch'
import {EXIT_DRILL_FAILED} from '../../src/errors'
import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {writeCraftedBackup} from '../helpers/crafted-backup'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'
import {waitFor} from '../helpers/serve'

/** A dump that holds the drill mid-import (psql runs pg_sleep in the scratch database) until the drill is killed. */
const SLOW_DUMP = `CREATE TABLE slow (id int);\nINSERT INTO slow VALUES (1);\nSELECT pg_sleep(60);\n`

describe('dbb drill (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>
  let backupId: string
  let shopBefore: Record<string, string>
  /** The source database's contents (without fingerprint's nextval probe, which moves a sequence each time). */
  const shop = async () => {
    const {serial: _probe, ...rest} = await fingerprint(cluster, 'shop')
    return rest
  }

  const databases = async () => (await cluster.psql(`SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database`)).split(',')
  const scratchDatabases = async () => (await databases()).filter((name) => name.startsWith('dbb_drill_'))
  const drillSidecar = async (id: string) => JSON.parse(await fs.readFile(path.join(backupDir, `${id}.drill.json`), 'utf8'))

  /** A backup of hand-written SQL, with `contents` added to its sidecar as a newer dbb would have recorded it. */
  async function crafted(sql: string, id: string, contents?: unknown, database = 'crafted') {
    await writeCraftedBackup(backupDir, sql, {id, database})
    if (contents === undefined) return
    const sidecarPath = path.join(backupDir, `${id}.meta.json`)
    const sidecar = JSON.parse(await fs.readFile(sidecarPath, 'utf8'))
    await fs.writeFile(sidecarPath, JSON.stringify({...sidecar, contents}))
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 3000)
    await cluster.psql(
      `CREATE SCHEMA "Schéma ü";
       CREATE TABLE "Schéma ü"."Bestellungen 注文" (id serial PRIMARY KEY, note text);
       INSERT INTO "Schéma ü"."Bestellungen 注文" (note) SELECT 'n' || g FROM generate_series(1, 7) g;
       SELECT lo_from_bytea(0, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, 3) g;`,
      'shop',
    )
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir}
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    expect(backup.code).toBe(0)
    backupId = JSON.parse(backup.stdout).metadata.id
    shopBefore = await shop()
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  it('records, in pg_dump\'s snapshot, every table with its exact row count (non-ASCII names included), sequences and large objects', async () => {
    const sidecar = JSON.parse(await fs.readFile(path.join(backupDir, `${backupId}.meta.json`), 'utf8'))
    const rows = Object.fromEntries(sidecar.contents.tables.map((table: {schema: string; name: string; rows: number}) => [`${table.schema}.${table.name}`, table.rows]))
    expect(rows).toEqual({'public.customers': 3, 'public.events': 3000, 'Schéma ü.Bestellungen 注文': 7})
    expect(sidecar.contents.largeObjects).toBe(3)
    const sequences = sidecar.contents.sequences.map((sequence: {name: string; lastValue: string}) => `${sequence.name}=${sequence.lastValue}`)
    expect(sequences).toEqual(expect.arrayContaining(['invoice_number=1004', 'customers_id_seq=3', 'Bestellungen 注文_id_seq=7']))
  })

  it('does not change the dump: pg_dump in the exported snapshot writes the same SQL as without it', async () => {
    const client = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'shop'})
    await client.connect()
    const snapshot = await exportSnapshot(client)
    try {
      const env = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password, PGDATABASE: 'shop'}
      // Every patched pg_dump writes a random \restrict key: the only line that may differ.
      const dump = (args: string[]) => execFileSync('pg_dump', args, {env, maxBuffer: 64 * 1024 * 1024}).toString('utf8').replace(/^\\(un)?restrict \S+$/gm, '')
      const withSnapshot = dump([`--snapshot=${snapshot.id}`])
      expect(withSnapshot).toContain('Bestellungen 注文')
      expect(withSnapshot).toEqual(dump([]))
    } finally {
      await snapshot.release()
    }
  })

  it('counts without parallel workers, which would take the cores pg_dump runs on, and still counts every row', async () => {
    // Large enough (≈ 20 MB of heap) that the planner's default is a parallel scan.
    await cluster.psql(`CREATE TABLE IF NOT EXISTS wide_count AS SELECT g AS id, repeat('x', 30) AS filler FROM generate_series(1, 400000) g; ANALYZE wide_count`, 'shop')
    const connect = async () => {
      const client = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'shop'})
      await client.connect()
      return client
    }
    const plan = async (client: Client) => (await client.query('EXPLAIN SELECT count(*) FROM wide_count')).rows.map((row) => row['QUERY PLAN']).join('\n')
    const plain = await connect()
    const recording = await connect()
    const snapshot = await exportSnapshot(recording)
    try {
      // The same query in an ordinary session is planned with workers: the check below can fail.
      expect(await plan(plain)).toMatch(/Gather/)
      expect(await plan(recording)).not.toMatch(/Gather/)
      const record = await snapshot.capture({checksums: false})
      expect(record.tables.find((table) => table.name === 'wide_count')?.rows).toBe(400000)
    } finally {
      await snapshot.release()
      await plain.end()
      await cluster.psql('DROP TABLE wide_count', 'shop')
    }
  })

  it('passes for a real backup: exit 0, the result stored next to the backup, the scratch database dropped, the source untouched', async () => {
    const result = await runCli(['drill', 'latest', '--json'], env)
    expect(result.stderr).not.toMatch(/"level":50/)
    expect(result.code).toBe(0)
    const drill = JSON.parse(result.stdout)
    expect(drill).toMatchObject({backupId, status: 'passed', checked: 'contents', differences: [], scratchDatabase: scratchDatabaseName('shop')})
    expect(drill.restoreMs).toBeGreaterThan(0)
    expect(await drillSidecar(backupId)).toEqual(drill)
    expect(await scratchDatabases()).toEqual([])
    expect(await shop()).toEqual(shopBefore)
    expect(result.stderr).toContain('"event":"drill.passed"')
  })

  it('fails with exit code 3 naming the table when the restore holds fewer rows than the backup recorded', async () => {
    const id = 'backup_20260102T000000Z.sql.gz'
    await crafted(`CREATE TABLE "Zähler" (id int);\nINSERT INTO "Zähler" VALUES (1), (2), (3);\nCREATE TABLE intact (id int);\n`, id, {
      tables: [
        {schema: 'public', name: 'Zähler', rows: 5},
        {schema: 'public', name: 'intact', rows: 0},
      ],
      sequences: [],
      largeObjects: 0,
      checksums: false,
    })
    const result = await runCli(['drill', id], env)
    expect(result.code).toBe(EXIT_DRILL_FAILED)
    expect(result.stdout).toContain('Drill FAILED')
    expect(result.stdout).toContain('public."Zähler": expected 5 rows, restored 3 rows')
    expect(result.stdout).not.toContain('intact:')
    const stored = await drillSidecar(id)
    expect(stored).toMatchObject({status: 'failed', differences: [{kind: 'table', object: 'public."Zähler"', expected: '5 rows', actual: '3 rows'}]})
    expect(result.stderr).toContain('"event":"drill.failed"')
    expect(await scratchDatabases()).toEqual([])
  })

  it('fails with exit code 3 when the dump does not import, and says why', async () => {
    const id = 'backup_20260103T000000Z.sql.gz'
    await crafted(`CREATE TABLE t (id int);\nINSERT INTO no_such_table VALUES (1);\n`, id)
    const result = await runCli(['drill', id, '--json'], env)
    expect(result.code).toBe(EXIT_DRILL_FAILED)
    const drill = JSON.parse(result.stdout)
    expect(drill.status).toBe('failed')
    expect(drill.error).toMatch(/relation "no_such_table" does not exist/)
    expect(await scratchDatabases()).toEqual([])
  })

  it('checks an older backup without a record for a successful restore only, and says so', async () => {
    const id = 'backup_20260104T000000Z.sql.gz'
    await crafted(`CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n`, id)
    const result = await runCli(['drill', id], env)
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('restore success only')
    expect((await drillSidecar(id)).checked).toBe('restore')
  })

  it('refuses a database named like its scratch database that it did not create, and leaves it alone', async () => {
    const name = scratchDatabaseName('crafted')
    await cluster.psql(`CREATE DATABASE ${name}`)
    await cluster.psql(`CREATE TABLE precious (id int); INSERT INTO precious VALUES (42)`, name)
    try {
      const result = await runCli(['drill', 'backup_20260104T000000Z.sql.gz'], env)
      expect(result.code).toBe(1)
      expect(result.stderr).toContain(`database "${name}" exists but is not a scratch database dbb can prove it made`)
      expect(await cluster.psql('SELECT id FROM precious', name)).toBe('42')
    } finally {
      await cluster.psql(`DROP DATABASE ${name}`)
    }
  })

  it('SIGTERM mid-restore: the scratch database is dropped, exit 1, no result recorded', async () => {
    const id = 'backup_20260105T000000Z.sql.gz'
    await crafted(SLOW_DUMP, id, undefined, 'slow')
    const child = startCli(['drill', id], env)
    const done = collect(child)
    await waitFor(async () => ((await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'`)) === '1' ? true : undefined), 30_000, 'the import to reach pg_sleep')
    child.kill('SIGTERM')
    const result = await done
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/drill interrupted; the scratch database dbb_drill_[0-9a-f]{8} was dropped/)
    expect(await scratchDatabases()).toEqual([])
    await expect(fs.stat(path.join(backupDir, `${id}.drill.json`))).rejects.toThrow(/ENOENT/)
  })

  it('SIGKILL mid-restore: no user database is touched, and the next drill drops the leftover and passes', async () => {
    const id = 'backup_20260106T000000Z.sql.gz'
    await crafted(SLOW_DUMP, id, undefined, 'shop-slow')
    const child = startCli(['drill', id], env)
    const done = collect(child)
    await waitFor(async () => ((await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'`)) === '1' ? true : undefined), 30_000, 'the import to reach pg_sleep')
    child.kill('SIGKILL')
    await done
    const leftover = scratchDatabaseName('shop-slow')
    expect(await scratchDatabases()).toEqual([leftover])
    expect(await shop()).toEqual(shopBefore)

    // The same source database's next drill (the crafted record names "shop-slow" too) finds the leftover under the lock.
    const next = 'backup_20260107T000000Z.sql.gz'
    await crafted(`CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n`, next, {tables: [{schema: 'public', name: 't', rows: 1}], sequences: [], largeObjects: 0, checksums: false}, 'shop-slow')
    const result = await runCli(['drill', next], env)
    expect(result.code).toBe(0)
    expect(result.stderr).toContain('"event":"drill.leftover_dropped"')
    expect(await scratchDatabases()).toEqual([])
    expect(await shop()).toEqual(shopBefore)
  })

  it('shows each backup\'s last drill in backup list (DRILL column, --json) and checks its age in dbb check', async () => {
    const list = await runCli(['backup', 'list'], {BACKUP_LOCAL_DIR: backupDir})
    expect(list.code).toBe(0)
    const row = (id: string) => list.stdout.split('\n').find((line) => line.startsWith(id)) ?? ''
    expect(list.stdout.split('\n')[0]).toMatch(/\bDRILL\s*$/)
    expect(row(backupId)).toMatch(/\spassed\s*$/)
    expect(row('backup_20260102T000000Z.sql.gz')).toMatch(/\sfailed\s*$/)
    expect(row('backup_20260105T000000Z.sql.gz')).toMatch(/\snever\s*$/)
    const json = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout)
    expect(json.find((entry: {id: string}) => entry.id === backupId).drill).toMatchObject({status: 'passed', restoreMs: expect.any(Number)})

    const check = JSON.parse((await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: backupDir, DRILL_MAX_AGE: '1h'})).stdout)
    expect(check.checks.find((entry: {name: string}) => entry.name === 'drill')).toMatchObject({status: 'pass', newest: 'backup_20260107T000000Z.sql.gz'})
  })

  it('with BACKUP_RECORD_CHECKSUMS, records a checksum per table and fails a drill whose rows differ in content, not only in number', async () => {
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_RECORD_CHECKSUMS: 'true'})
    expect(backup.code).toBe(0)
    const {id} = JSON.parse(backup.stdout).metadata
    const sidecarPath = path.join(backupDir, `${id}.meta.json`)
    const sidecar = JSON.parse(await fs.readFile(sidecarPath, 'utf8'))
    expect(sidecar.contents.checksums).toBe(true)
    for (const table of sidecar.contents.tables) expect(table.checksum).toMatch(/^-?\d+$/)
    expect((await runCli(['drill', id], env)).code).toBe(0)

    // Same row count, other contents: what only a checksum sees.
    const customers = sidecar.contents.tables.find((table: {name: string}) => table.name === 'customers')
    customers.checksum = String(BigInt(customers.checksum) + 1n)
    await fs.writeFile(sidecarPath, JSON.stringify(sidecar))
    const tampered = await runCli(['drill', id], env)
    expect(tampered.code).toBe(EXIT_DRILL_FAILED)
    expect(tampered.stdout).toMatch(/public\.customers: expected checksum -?\d+, restored checksum -?\d+/)
  })
})
