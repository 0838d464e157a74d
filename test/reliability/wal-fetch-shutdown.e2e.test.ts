import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli} from '../helpers/cli'
import {PgCluster, isRoot, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived, waitFor, waitForPromotion} from '../helpers/wal'

/**
 * PostgreSQL stopped while its restore_command is half-way through a download. A fast shutdown
 * signals the startup process's group with SIGTERM (restore_command included), an immediate one
 * with SIGQUIT. The archived copy of one segment is replaced by a FIFO the test writes half of, so
 * the fetch is certainly mid-stream, its temporary file in pg_wal, when the server is stopped. After
 * either shutdown pg_wal holds no `.dbb-partial`, and the next start replays to the end with every
 * row (the signal contract of src/wal/fetch-exit.ts, with the real server).
 */
describe('PostgreSQL stopped while wal fetch is mid-download', () => {
  let cluster: PgCluster | undefined
  let storeDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-fetch-shutdown-store-')
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  it('a fast and an immediate shutdown leave nothing half-written in pg_wal, and the next start replays every row', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE ledger (id int PRIMARY KEY, note text)')
    expect((await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    let held = ''
    for (let round = 0; round < 3; round++) {
      await db.psql(`INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series(${round * 20000 + 1}, ${(round + 1) * 20000}) g`)
      held = await switchWalAndWaitArchived(db, storeDir)
    }

    const expected = await db.psql(`SELECT count(*) || ':' || md5(string_agg(note, '' ORDER BY id)) FROM ledger`)
    await db.stop()
    expect((await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force', '--json'], {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)

    const archived = path.join(storeDir, 'wal', `${held}.gz`)
    const real = `${archived}.real`
    await fs.rename(archived, real)
    const pgWal = path.join(db.dataDir, 'pg_wal')
    const partials = async () => (await fs.readdir(pgWal)).filter((name) => name.endsWith('.dbb-partial'))

    for (const mode of ['fast', 'immediate'] as const) {
      execFileSync('mkfifo', ['-m', '0644', archived])
      if (isRoot) execFileSync('chown', ['postgres:postgres', archived])
      // Resolves when restore_command opens the FIFO to read the segment; half of it is written, and
      // the writer stays open, so the fetch waits mid-stream.
      const writer = fs.open(archived, 'w')
      await db.start()
      const handle = await writer
      const gzip = await fs.readFile(real)
      // Once the half is written, the fetch has read all but the FIFO's 64 KiB buffer of it, and it
      // cannot end while the writer stays open: it is mid-stream. Its temporary file exists from the
      // start; it may still be empty, because igzip (gzip's decoder where installed) writes what it
      // decoded in large blocks (src/compress/file-programs.ts).
      await handle.write(gzip.subarray(0, gzip.length >> 1))
      const written = await waitFor(`a temporary file of ${held} in pg_wal`, async () => (await partials())[0])
      expect(written).toMatch(/^RECOVERYXLOG\.\d+-\d+\.dbb-partial$/)

      await db.stop(mode)
      expect([mode, await partials()]).toEqual([mode, []])
      await handle.close().catch(() => {})
      await fs.rm(archived)
    }

    await fs.rename(real, archived)
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql(`SELECT count(*) || ':' || md5(string_agg(note, '' ORDER BY id)) FROM ledger`)).toBe(expected)
    expect(expected.startsWith('60000:')).toBe(true)
  }, 300_000)
})
