import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {BIN, runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivedWal, stopLockHolder, switchWalAndWaitArchived, waitFor, waitForPromotion} from '../helpers/wal'

const run = promisify(execFile)

/**
 * archive_command = 'dbb wal push --async %p' against a real PostgreSQL: pgbench writes, segments go
 * through the spool (and the uploader's read-ahead), and a point-in-time restore from what the
 * uploader stored is exact.
 */
describe('asynchronous WAL archiving (real PostgreSQL, wal push --async)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let spoolDir: string

  beforeEach(async () => {
    storeDir = await makeServerOwnedDir('dbb-async-store-')
    spoolDir = await makeServerOwnedDir('dbb-async-spool-')
    cluster = await startPostgres({
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        // Settings in the environment, no flags: the form that takes the fast path (src/wal/fast-cli.ts).
        archive_command: `'BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} ${process.execPath} ${BIN} wal push --async %p'`,
      },
    })
  })

  afterEach(async () => {
    await cluster?.destroy()
    // The detached uploader exits on its own once the spool stays empty; stop it now if it still runs.
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))

    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(spoolDir, {recursive: true, force: true})
  })

  const storageEnv = () => ({BACKUP_LOCAL_DIR: storeDir})

  it('archives pgbench WAL through the spool, and a restore to a recorded time is exact', async () => {
    const db = cluster!
    const pgbench = path.join(db.binDir, 'pgbench')
    const pgEnv = {...process.env, PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGPASSWORD: db.password}
    await run(pgbench, ['-i', '-q', '-s', '2', 'postgres'], {env: pgEnv})
    const backup = await runCli(['backup', 'run', '--type', 'base'], {...db.dbbEnv(), ...storageEnv()})
    expect(backup.code).toBe(0)

    await run(pgbench, ['-n', '-c', '2', '-t', '1500', 'postgres'], {env: pgEnv})
    await db.psql('SELECT pg_switch_wal()')
    await db.psql('CREATE TABLE marks (id int PRIMARY KEY, phase text); INSERT INTO marks SELECT g, $$before$$ FROM generate_series(1, 200) g')
    const expected = await db.psql('SELECT sum(delta) || $$/$$ || count(*) FROM pgbench_history')
    const target = await db.psql('SELECT clock_timestamp()')
    await new Promise((resolve) => setTimeout(resolve, 50))
    await db.psql(`INSERT INTO marks SELECT g, 'after' FROM generate_series(201, 300) g`)
    await run(pgbench, ['-n', '-c', '2', '-t', '500', 'postgres'], {env: pgEnv})
    const last = await switchWalAndWaitArchived(db, storeDir)

    // PostgreSQL saw every segment archived, none failed, and the spool drained.
    // (storage can hold a segment before PostgreSQL hears "archived": the uploader reads ahead.)
    const stats = await waitFor('PostgreSQL to see the last segment archived', async () => {
      const row = await db.psql('SELECT failed_count, last_archived_wal FROM pg_stat_archiver')
      return row.endsWith(last) ? row : undefined
    })
    expect(stats).toBe(`0|${last}`)
    await waitFor('the spool to drain', async () => ((await fs.readdir(spoolDir)).some((entry) => /^[0-9A-F]{24}$/.test(entry)) ? undefined : true))
    const archived = (await archivedWal(storeDir)).filter((name) => /^[0-9A-F]{24}$/.test(name))
    // Segments before the base backup's first one were pruned by the backup's retention run.
    expect(archived.length).toBeGreaterThanOrEqual(3)
    expect(archived.at(-1)).toBe(last)

    await db.stop()
    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force', '--target-time', target], storageEnv())
    expect(restore.code).toBe(0)
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql('SELECT phase, count(*), min(id), max(id) FROM marks GROUP BY phase')).toBe('before|200|1|200')
    expect(await db.psql('SELECT sum(delta) || $$/$$ || count(*) FROM pgbench_history')).toBe(expected)
  })
})
