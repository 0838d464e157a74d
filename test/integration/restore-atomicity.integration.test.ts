import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import {Readable} from 'node:stream'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'
import {gzipSync} from 'node:zlib'

import {resolveBackup} from '../../src/backup/metadata'
import type {DatabaseConfig} from '../../src/config'
import {AbortedError, OperationError} from '../../src/errors'
import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src'
import {restoreDatabaseNames} from '../../src/restore/database'
import {LogicalRestoreOptions, restoreLogical} from '../../src/restore/logical'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'
import {writeCraftedBackup} from '../helpers/crafted-backup'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {holdSwapBetweenRenames, prepareSwapHold} from '../helpers/hold-swap'

/** Enough statements that part of the gzip stream decompresses to complete, executable SQL. */
const TWO_HALVES = [
  'CREATE TABLE first_half (id int, note text);',
  ...Array.from({length: 3000}, (_, i) => `INSERT INTO first_half VALUES (${i}, '${'n'.repeat(i % 40)}');`),
  'CREATE TABLE second_half (id int);',
].join('\n')

/** What plain pg_dump writes for a large object: its data in a transaction of its own. */
const LARGE_OBJECT_THEN_FAILURE = `
CREATE TABLE documents (id int PRIMARY KEY, body oid);
SELECT pg_catalog.lo_create('16500');
BEGIN;
SELECT pg_catalog.lo_open('16500', 131072);
SELECT pg_catalog.lowrite(0, '\\x68656c6c6f');
SELECT pg_catalog.lo_close(0);
COMMIT;
INSERT INTO documents VALUES (1, 16500);
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON documents TO tenant_role_that_does_not_exist USING (true);
`

const LARGE_OBJECT_OK = LARGE_OBJECT_THEN_FAILURE.replace(/CREATE POLICY[^\n]*\n/, 'CREATE POLICY tenant_only ON documents TO PUBLIC USING (true);\n')

const EVENT_TRIGGER = `
CREATE TABLE audited (id int);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
`

const FIRST = 'backup_20260101T000000Z.sql.gz'

/** A backend that serves `replacement()` instead of the stored dump. */
function replacingBackend(inner: StorageBackend, replacement: () => Readable, counter?: {gets: number}): StorageBackend {
  return {
    name: inner.name,
    location: inner.location,
    put: (key, body, options) => inner.put(key, body, options),
    get: async (key, options) => {
      if (counter && key.endsWith('.sql.gz')) counter.gets++
      return key.endsWith('.sql.gz') ? replacement() : inner.get(key, options)
    },
    stat: (key) => inner.stat(key),
    list: (prefix) => inner.list(prefix),
    delete: (key) => inner.delete(key),
    health: () => inner.health(),
  }
}

describe('restoreLogical: the target is always the old database or the complete new one (real PostgreSQL)', () => {
  let cluster: PgCluster
  let dir: string
  let storage: LocalBackend
  const logger = createLogger({level: 'silent'})
  const database = (user?: {user: string; password: string}): DatabaseConfig => ({
    host: cluster.host,
    port: cluster.port,
    user: user?.user ?? cluster.user,
    password: user?.password ?? cluster.password,
    database: 'unused',
  })
  const tablesIn = (name: string) =>
    cluster.psql(`SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables WHERE schemaname = 'public'`, name)
  const dbbDatabases = async () =>
    (await cluster.psql(`SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database WHERE datname LIKE '%\\_dbb\\_%'`)).split(',').filter(Boolean)
  const literal = (text: string) => `'${text.replaceAll("'", "''")}'`
  const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`

  /** A target with one table that no dump creates: its survival proves the target was not touched. */
  async function oldTarget(name: string, owner?: string): Promise<void> {
    await cluster.psql(`DROP DATABASE IF EXISTS ${quoted(name)} WITH (FORCE)`)
    await cluster.psql(`CREATE DATABASE ${quoted(name)}${owner ? ` OWNER ${owner}` : ''}`)
    await cluster.psql(`CREATE TABLE old_contents (id int); INSERT INTO old_contents VALUES (42)${owner ? `; ALTER TABLE old_contents OWNER TO ${owner}` : ''}`, name)
  }

  async function crafted(id: string, sql: string) {
    await writeCraftedBackup(dir, sql, {id})
    return resolveBackup(storage, id)
  }

  const restore = (options: Omit<LogicalRestoreOptions, 'backup'> & {backup: LogicalRestoreOptions['backup']}, backend: StorageBackend = storage, user?: {user: string; password: string}) =>
    restoreLogical({database: database(user), storage: backend, logger}, options)

  beforeAll(async () => {
    cluster = await startPostgres()
    dir = await tempDir()
    storage = new LocalBackend(dir)
    await writeCraftedBackup(dir, TWO_HALVES)
    await cluster.psql(`CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'restorer-pw'; GRANT pg_signal_backend TO restorer; CREATE ROLE weak LOGIN PASSWORD 'weak-pw'; CREATE ROLE app_owner NOLOGIN`)
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  /** Resolves once psql has run statements in the staging database of `target` and waits for more input. */
  async function psqlWaitingInStaging(target: string): Promise<void> {
    const {staging} = restoreDatabaseNames(target)
    const waiting = `SELECT count(*) FROM pg_stat_activity WHERE datname = ${literal(staging)} AND state = 'idle' AND application_name = 'dbb'`
    for (let attempt = 0; (await cluster.psql(waiting)) !== '1' || (await tablesIn(staging)) === ''; attempt++) {
      if (attempt > 100) throw new Error('psql never started importing')
      await sleep(100)
    }
  }

  it('swaps only on a complete import with a matching sha256; the staging database takes the name in one transaction', async () => {
    await oldTarget('complete')
    const backup = await resolveBackup(storage, FIRST)
    const outcome = await restore({backup, targetDatabase: 'complete'})
    expect(outcome).toMatchObject({database: 'complete', replacedExisting: true, previousDatabase: null, restoredBytes: Buffer.byteLength(TWO_HALVES)})
    expect(await tablesIn('complete')).toBe('first_half,second_half')
    expect(await cluster.psql('SELECT count(*) FROM first_half', 'complete')).toBe('3000')
    expect(await dbbDatabases()).toEqual([])
  })

  it('keeps the target when the object was replaced in storage (valid SQL, wrong sha256): psql is killed before its input ends, staging dropped', async () => {
    await oldTarget('swapped')
    const backup = await resolveBackup(storage, FIRST)
    const replacement = new Readable({read() {}})
    replacement.push(gzipSync(Buffer.from('CREATE TABLE planted (id int);\nINSERT INTO planted VALUES (1);\n')))
    const running = restore({backup, targetDatabase: 'swapped'}, replacingBackend(storage, () => replacement))
    running.catch(() => {})
    await psqlWaitingInStaging('swapped')
    replacement.push(null)
    await expect(running).rejects.toThrow(OperationError)
    await expect(running).rejects.toThrow(/integrity check failed for backup_\S+: read \d+ bytes[\s\S]*database "swapped" was not changed/)
    expect(await tablesIn('swapped')).toBe('old_contents')
    expect(await dbbDatabases()).toEqual([])
  })

  it('keeps the target when interrupted mid-import (Ctrl-C), after psql has executed part of the dump', async () => {
    await oldTarget('interrupted')
    const body = await fs.readFile(`${dir}/backup_20260101T000000Z.sql.gz`)
    const stalled = new Readable({read() {}})
    stalled.push(body.subarray(0, Math.floor(body.length * 0.7)))
    const backup = await resolveBackup(storage, FIRST)
    const controller = new AbortController()
    const running = restore({backup, targetDatabase: 'interrupted', signal: controller.signal}, replacingBackend(storage, () => stalled))
    running.catch(() => {})
    await psqlWaitingInStaging('interrupted')
    controller.abort()
    await expect(running).rejects.toThrow(AbortedError)
    await expect(running).rejects.toThrow(/restore interrupted; database "interrupted" was not changed/)
    expect(await tablesIn('interrupted')).toBe('old_contents')
    expect(await dbbDatabases()).toEqual([])
  })

  it('a storage connection reset mid-stream never reaches psql as a clean end of input (issue 14): named as a lost connection, target unchanged', async () => {
    await oldTarget('cut')
    const body = await fs.readFile(`${dir}/backup_20260101T000000Z.sql.gz`)
    const cut = new Readable({read() {}})
    cut.push(body.subarray(0, 4000))
    const backup = await resolveBackup(storage, FIRST)
    const running = restore({backup, targetDatabase: 'cut'}, replacingBackend(storage, () => cut))
    running.catch(() => {})
    await psqlWaitingInStaging('cut')
    cut.destroy(Object.assign(new Error('aborted'), {code: 'ECONNRESET'}))
    await expect(running).rejects.toThrow(/the connection to storage was lost after 4000 bytes reading backup_20260101T000000Z\.sql\.gz: aborted \(ECONNRESET\)/)
    expect(await tablesIn('cut')).toBe('old_contents')
    expect(await dbbDatabases()).toEqual([])
  })

  it('the swap is one transaction: killed between its two renames, the target is exactly the old database', async () => {
    await oldTarget('atomic')
    const backup = await resolveBackup(storage, FIRST)
    const {staging} = restoreDatabaseNames('atomic')
    await prepareSwapHold(cluster, 'atomic')
    const running = restore({backup, targetDatabase: 'atomic'})
    running.catch(() => {})
    const hold = await holdSwapBetweenRenames(cluster, staging)
    try {
      // Inside the swap, the old target is already renamed — but only in the swap's uncommitted transaction.
      expect(await cluster.psql(`SELECT count(*) FROM pg_database WHERE datname = 'atomic'`)).toBe('1')
      await cluster.psql(`SELECT pg_terminate_backend(${hold.swapperPid})`)
    } finally {
      await hold.release()
    }

    await expect(running).rejects.toThrow(/the swap was rolled back, database "atomic" is unchanged[\s\S]*database "atomic" was not changed/)
    expect(await tablesIn('atomic')).toBe('old_contents')
    expect(await cluster.psql('SELECT id FROM old_contents', 'atomic')).toBe('42')
    expect(await dbbDatabases()).toEqual([])
  })

  it('large objects (their own BEGIN/COMMIT) and a later failure on a missing role: target unchanged, error names the role', async () => {
    await oldTarget('with_rls')
    const failing = await crafted('backup_20260102T000000Z.sql.gz', LARGE_OBJECT_THEN_FAILURE)
    await expect(restore({backup: failing, targetDatabase: 'with_rls'})).rejects.toThrow(
      /restore failed: psql:<stdin>:\d+: ERROR: +role "tenant_role_that_does_not_exist" does not exist\ndatabase "with_rls" was not changed/,
    )
    expect(await tablesIn('with_rls')).toBe('old_contents')
    expect(await cluster.psql('SELECT count(*) FROM pg_largeobject_metadata', 'with_rls')).toBe('0')
    expect(await dbbDatabases()).toEqual([])

    // The same dump with the policy fixed restores completely, large object and row-level security included.
    const fixed = await crafted('backup_20260103T000000Z.sql.gz', LARGE_OBJECT_OK)
    await restore({backup: fixed, targetDatabase: 'with_rls'})
    expect(await cluster.psql(`SELECT encode(lo_get(body), 'escape') FROM documents`, 'with_rls')).toBe('hello')
    expect(await cluster.psql(`SELECT relrowsecurity FROM pg_class WHERE relname = 'documents'`, 'with_rls')).toBe('t')
  })

  it('a dump needing superuser (event trigger) restored by a non-superuser: target unchanged, the error keeps PostgreSQL\'s HINT', async () => {
    await oldTarget('restorer_db', 'restorer')
    const backup = await crafted('backup_20260104T000000Z.sql.gz', EVENT_TRIGGER)
    const failure = restore({backup, targetDatabase: 'restorer_db'}, storage, {user: 'restorer', password: 'restorer-pw'})
    await expect(failure).rejects.toThrow(/ERROR: +permission denied to create event trigger "log_ddl"\nHINT: +Must be superuser to create an event trigger\.\ndatabase "restorer_db" was not changed/)
    expect(await tablesIn('restorer_db')).toBe('old_contents')
    expect(await dbbDatabases()).toEqual([])
  })

  it('preflight refuses, before a byte is read from storage: no CREATEDB, a target owned by someone else, an unknown --owner role', async () => {
    const counter = {gets: 0}
    const backend = replacingBackend(storage, () => Readable.from([]), counter)
    const backup = await resolveBackup(storage, FIRST)
    await oldTarget('someone_elses')
    await expect(restore({backup, targetDatabase: 'weak_target'}, backend, {user: 'weak', password: 'weak-pw'})).rejects.toThrow(
      /preflight: weak may not create databases: the restore imports into a new database first \(as a superuser: ALTER ROLE weak CREATEDB\); nothing was changed/,
    )
    await expect(restore({backup, targetDatabase: 'someone_elses'}, backend, {user: 'restorer', password: 'restorer-pw'})).rejects.toThrow(
      /preflight: database "someone_elses" is owned by postgres; restorer can neither rename nor drop it \(restore as postgres or a superuser/,
    )
    await expect(restore({backup, targetDatabase: 'someone_elses', owner: 'nobody_here'}, backend)).rejects.toThrow(/preflight: --owner nobody_here: no such role on this server/)
    await expect(restore({backup, targetDatabase: 'restorer_new', owner: 'app_owner'}, backend, {user: 'restorer', password: 'restorer-pw'})).rejects.toThrow(
      /preflight: --owner app_owner: restorer is not a member of it \(with INHERIT\)/,
    )
    expect(counter.gets).toBe(0)
    expect(await tablesIn('someone_elses')).toBe('old_contents')
    expect(await cluster.psql(`SELECT count(*) FROM pg_database WHERE datname = 'weak_target'`)).toBe('0')
  })

  it('--owner ROLE: objects are created as that role, which also owns the database (dumps taken with --no-owner)', async () => {
    await oldTarget('owned')
    const backup = await resolveBackup(storage, FIRST)
    await restore({backup, targetDatabase: 'owned', owner: 'app_owner'})
    expect(await cluster.psql(`SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'`, 'owned')).toBe('app_owner')
    expect(await cluster.psql(`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'owned'`)).toBe('app_owner')
  })

  it('--keep-previous keeps the replaced database under its previous name (rollback = rename back); a second one is refused until it is gone', async () => {
    await oldTarget('rollback')
    const backup = await resolveBackup(storage, FIRST)
    const {previous} = restoreDatabaseNames('rollback')
    const outcome = await restore({backup, targetDatabase: 'rollback', keepPrevious: true})
    expect(outcome.previousDatabase).toBe(previous)
    expect(await tablesIn('rollback')).toBe('first_half,second_half')
    expect(await tablesIn(previous)).toBe('old_contents')
    await expect(restore({backup, targetDatabase: 'rollback', keepPrevious: true})).rejects.toThrow(/--keep-previous: database "rollback_dbb_previous_[0-9a-f]{8}" already exists/)

    // The documented rollback.
    await cluster.psql(`ALTER DATABASE rollback RENAME TO rollback_bad`)
    await cluster.psql(`ALTER DATABASE ${quoted(previous)} RENAME TO rollback`)
    expect(await tablesIn('rollback')).toBe('old_contents')
  })

  it('a second restore into the same target is refused while one runs; a restore into another target keeps the running one\'s staging database', async () => {
    await oldTarget('busy')
    const body = await fs.readFile(`${dir}/backup_20260101T000000Z.sql.gz`)
    const stalled = new Readable({read() {}})
    stalled.push(body.subarray(0, Math.floor(body.length * 0.5)))
    const backup = await resolveBackup(storage, FIRST)
    const controller = new AbortController()
    const first = restore({backup, targetDatabase: 'busy', signal: controller.signal}, replacingBackend(storage, () => stalled))
    first.catch(() => {})
    await psqlWaitingInStaging('busy')

    await expect(restore({backup, targetDatabase: 'busy'})).rejects.toThrow(/another restore into database "busy" is running on this server/)
    await restore({backup, targetDatabase: 'elsewhere'})
    expect(await dbbDatabases()).toEqual([restoreDatabaseNames('busy').staging])

    controller.abort()
    await expect(first).rejects.toThrow(AbortedError)
    expect(await tablesIn('busy')).toBe('old_contents')
    expect(await dbbDatabases()).toEqual([])
  })

  it('non-ASCII, quoted and 63-byte database names: staging names fit in 63 bytes, restore creates and then replaces them', async () => {
    const names = ['Ünïcødé "quoted" naïve-db', `${'é'.repeat(30)}xyz`]
    for (const name of names) {
      const derived = restoreDatabaseNames(name)
      for (const value of [derived.staging, derived.replaced, derived.previous]) expect(Buffer.byteLength(value)).toBeLessThanOrEqual(63)
      const backup = await resolveBackup(storage, FIRST)
      expect(await restore({backup, targetDatabase: name})).toMatchObject({replacedExisting: false})
      await cluster.psql('CREATE TABLE extra (id int)', name)
      expect(await restore({backup, targetDatabase: name})).toMatchObject({replacedExisting: true})
      expect(await tablesIn(name)).toBe('first_half,second_half')
    }

    expect(Buffer.byteLength(names[1])).toBe(63)
    expect(await dbbDatabases()).toEqual([])
  })

  it('3,200 tables on default max_locks_per_transaction (which one transaction cannot hold); a dump that exhausts the lock table shows the HINT', async () => {
    const tables = Array.from({length: 3200}, (_, i) => `CREATE TABLE t${i} (id int PRIMARY KEY, note text);\nINSERT INTO t${i} VALUES (${i}, 'x');`).join('\n')
    const many = await crafted('backup_20260105T000000Z.sql.gz', tables)
    // The old way fails: one transaction needs more lock slots than the server has.
    await cluster.psql('CREATE DATABASE single_tx')
    const sqlFile = `${dir}/tables.sql`
    await fs.writeFile(sqlFile, tables)
    const oneTransaction = promisify(execFile)('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', sqlFile], {
      env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password, PGDATABASE: 'single_tx'},
      maxBuffer: 64 * 1024 * 1024,
    })
    await expect(oneTransaction).rejects.toThrow(/out of shared memory/)

    await restore({backup: many, targetDatabase: 'many_tables'})
    expect(await cluster.psql(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`, 'many_tables')).toBe('3200')

    const exhausting = await crafted('backup_20260106T000000Z.sql.gz', `BEGIN;\n${tables}\nCOMMIT;\n`)
    await expect(restore({backup: exhausting, targetDatabase: 'many_tables'})).rejects.toThrow(
      /ERROR: +out of shared memory\nHINT: +You might need to increase max_locks_per_transaction\.\ndatabase "many_tables" was not changed/,
    )
    expect(await cluster.psql(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`, 'many_tables')).toBe('3200')
  }, 300_000)
})
