import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Client} from 'pg'

import {runCli, tempDir} from '../helpers/cli'
import {writeCraftedBackup} from '../helpers/crafted-backup'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

/** The SQL of a dump that does real work, then fails on its third statement. */
const FAILS_HALFWAY = `
CREATE TABLE orders (id int PRIMARY KEY, total numeric);
INSERT INTO orders SELECT g, g * 2 FROM generate_series(1, 1000) g;
INSERT INTO no_such_table VALUES (1);
CREATE TABLE never_created (id int);
`

describe('dbb restore (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>
  let backupId: string
  /** The contents of "shop" when the backup was taken. */
  let backedUp: Record<string, string>

  const markerCount = async (database = 'shop') =>
    Number(await cluster.psql(`SELECT count(*) FROM customers WHERE name = 'changed after backup'`, database))
  const tablesIn = async (database: string) =>
    cluster.psql(`SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables WHERE schemaname = 'public'`, database)
  const databaseExists = async (database: string) => (await cluster.psql(`SELECT count(*) FROM pg_database WHERE datname = '${database}'`)) === '1'
  /** Staging, replaced or previous databases of dbb's: a finished restore leaves none (unless --keep-previous). */
  const leftovers = async () => (await cluster.psql(`SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE '%\\_dbb\\_%'`)).split(',').filter(Boolean)

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 2000)
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir}
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    expect(backup.code).toBe(0)
    backupId = JSON.parse(backup.stdout).metadata.id
    backedUp = await fingerprint(cluster, 'shop')
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  /** Changes "shop" so a restore has something to undo, and a refused restore something to keep. */
  async function changeShop(): Promise<void> {
    await cluster.psql(`INSERT INTO customers (name) VALUES ('changed after backup'); DELETE FROM events WHERE id <= 500`, 'shop')
  }

  it('lists the backups, newest first, when called without an argument (no database settings needed)', async () => {
    const table = await runCli(['restore'], {BACKUP_LOCAL_DIR: backupDir})
    expect(table.code).toBe(0)
    const list = await runCli(['backup', 'list'], {BACKUP_LOCAL_DIR: backupDir})
    // The same table (the AGE column may tick between the two runs).
    const rows = (output: string) => output.trim().split('\n').slice(0, 3).map((line) => line.replace(/\s\d+s\s/, ' AGE '))
    expect(rows(table.stdout)).toEqual(rows(list.stdout))
    expect(table.stdout).toContain(backupId)

    const json = await runCli(['restore', '--json'], {BACKUP_LOCAL_DIR: backupDir})
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout).map((backup: {id: string}) => backup.id)).toEqual([backupId])
  })

  it('refuses without --force when stdin is not a terminal, and leaves the database untouched', async () => {
    await changeShop()
    const result = await runCli(['restore', 'latest'], env)
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/refusing to replace database "shop" without confirmation: stdin is not a terminal/)
    expect(result.stderr).toContain('--force')
    expect(await markerCount()).toBe(1)
  })

  it('restores latest over changed data: the database equals the backed-up state', async () => {
    await cluster.psql(`DELETE FROM customers WHERE name = 'changed after backup'; INSERT INTO customers (name) VALUES ('changed after backup')`, 'shop')
    const result = await runCli(['restore', 'latest', '--force', '--json'], env)
    expect(result.stderr).not.toContain(cluster.password)
    expect(result.code).toBe(0)
    const outcome = JSON.parse(result.stdout)
    expect(outcome).toMatchObject({id: backupId, database: 'shop', host: '127.0.0.1', port: cluster.port, replacedExisting: true})
    expect(outcome.restoredBytes).toBeGreaterThan(0)
    expect(await fingerprint(cluster, 'shop')).toEqual(backedUp)
    // Progress and the phases are reported as structured log events when not on a terminal.
    const events = result.stderr
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line).event)
    expect(events).toEqual(expect.arrayContaining(['restore.started', 'restore.staged', 'restore.verified', 'restore.swapped', 'restore.succeeded']))
    const progress = result.stderr
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line))
      .filter((line) => line.event === 'restore.progress')
    for (const line of progress) expect(line).toMatchObject({totalBytes: outcome.sizeBytes, percent: expect.any(Number)})
    expect(await leftovers()).toEqual([])
  })

  it('is not blocked by other sessions connected to the target database (even one holding locks), which keep working on the old data during the import', async () => {
    await changeShop()
    const other = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'shop'})
    other.on('error', () => {}) // it is about to be terminated
    await other.connect()
    await other.query('BEGIN')
    await other.query('LOCK TABLE customers IN ACCESS EXCLUSIVE MODE')
    try {
      const result = await runCli(['restore', backupId, '--force', '--json'], env)
      expect(result.code).toBe(0)
      expect(JSON.parse(result.stdout).terminatedSessions).toBeGreaterThanOrEqual(1)
      expect(await leftovers()).toEqual([])
      expect(await fingerprint(cluster, 'shop')).toEqual(backedUp)
      await expect(other.query('SELECT 1')).rejects.toThrow()
    } finally {
      await other.end().catch(() => {})
    }
  })

  it('--target-db creates the missing target and restores into it, leaving the source database untouched', async () => {
    await changeShop()
    const sourceBefore = await fingerprint(cluster, 'shop')
    expect(await databaseExists('shop_drill')).toBe(false)
    const result = await runCli(['restore', 'latest', '--target-db', 'shop_drill', '--force', '--json'], env)
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toMatchObject({database: 'shop_drill', replacedExisting: false})
    expect(await fingerprint(cluster, 'shop_drill')).toEqual(backedUp)
    expect(await markerCount()).toBe(1)
    // fingerprint() draws one value from the serial sequence; everything else is unchanged.
    const sourceAfter = await fingerprint(cluster, 'shop')
    expect({...sourceAfter, serial: undefined}).toEqual({...sourceBefore, serial: undefined})
    expect(Number(sourceAfter.serial)).toBe(Number(sourceBefore.serial) + 1)
  })

  it('refuses a tampered backup (sha256 mismatch) before touching the database', async () => {
    const tamperedDir = await tempDir()
    try {
      for (const file of [backupId, `${backupId}.meta.json`]) await fs.copyFile(path.join(backupDir, file), path.join(tamperedDir, file))
      const dump = await fs.readFile(path.join(tamperedDir, backupId))
      dump[Math.floor(dump.length / 2)] ^= 0xff
      await fs.writeFile(path.join(tamperedDir, backupId), dump)
      await changeShop()
      const before = await markerCount()

      const result = await runCli(['restore', 'latest', '--force'], {...env, BACKUP_LOCAL_DIR: tamperedDir})
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/integrity check failed for backup_\S+: .*the stored dump is damaged or was altered\n.*database "shop" was not changed/)
      expect(result.stderr).not.toContain('restore.swapped')
      expect(await markerCount()).toBe(before)
      expect(await leftovers()).toEqual([])
    } finally {
      await fs.rm(tamperedDir, {recursive: true, force: true})
    }
  })

  it("keeps its lock session through a server's idle_session_timeout shorter than the import, and completes", async () => {
    const craftedDir = await tempDir()
    // The import runs 1.5 s while the lock session waits idle; the role's timeout is 300 ms.
    const slowImport = `CREATE TABLE slow (id int);\nSELECT pg_sleep(1.5);\nINSERT INTO slow VALUES (1), (2);\n`
    await cluster.psql(`ALTER ROLE "${cluster.user}" SET idle_session_timeout = '300ms'`)
    try {
      const crafted = await writeCraftedBackup(craftedDir, slowImport)
      const result = await runCli(['restore', crafted.id, '--target-db', 'idle_target', '--force'], {...env, BACKUP_LOCAL_DIR: craftedDir})
      expect([result.code, result.stderr]).toEqual([0, expect.anything()])
      expect(await cluster.psql('SELECT count(*) FROM slow', 'idle_target')).toBe('2')
      expect(await leftovers()).toEqual([])
    } finally {
      await cluster.psql(`ALTER ROLE "${cluster.user}" RESET idle_session_timeout`)
      await fs.rm(craftedDir, {recursive: true, force: true})
    }
  })

  it('leaves the target exactly as it was when the SQL fails half-way: exit 1, psql error line shown, staging dropped', async () => {
    const craftedDir = await tempDir()
    try {
      const crafted = await writeCraftedBackup(craftedDir, FAILS_HALFWAY)
      await cluster.psql('CREATE DATABASE crafted_target')
      await cluster.psql('CREATE TABLE previous_contents (id int)', 'crafted_target')

      const result = await runCli(['restore', crafted.id, '--target-db', 'crafted_target', '--force'], {...env, BACKUP_LOCAL_DIR: craftedDir})
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/restore failed: psql:<stdin>:4: ERROR: +relation "no_such_table" does not exist/)
      expect(result.stderr).toMatch(/database "crafted_target" was not changed/)
      expect(await databaseExists('crafted_target')).toBe(true)
      expect(await tablesIn('crafted_target')).toBe('previous_contents')
      expect(await leftovers()).toEqual([])
    } finally {
      await fs.rm(craftedDir, {recursive: true, force: true})
    }
  })

  it('rejects bad input with exit code 2 and an actionable message, before doing anything', async () => {
    const longName = await runCli(['restore', 'latest', '--target-db', 'x'.repeat(64), '--force'], env)
    expect(longName.code).toBe(2)
    expect(longName.stderr).toContain('--target-db: must be a database name of 1 to 63 bytes')

    const noHost = await runCli(['restore', 'latest', '--force'], {BACKUP_LOCAL_DIR: backupDir, DB_NAME: 'shop'})
    expect(noHost.code).toBe(2)
    expect(noHost.stderr).toContain('DB_HOST: is required (example: DB_HOST=db.internal)')

    const badId = await runCli(['restore', '../etc/passwd', '--force'], env)
    expect(badId.code).toBe(2)
    expect(badId.stderr).toContain('is not a backup id')
  })
})
