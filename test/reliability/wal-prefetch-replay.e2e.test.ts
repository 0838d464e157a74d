import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived, waitForPromotion} from '../helpers/wal'

/**
 * Prefetch during a real PostgreSQL replay: a base backup restored with dbb's own restore_command
 * (`wal fetch --storage local --local-dir … %f %p`), WAL_SPOOL_DIR in the server's environment.
 * The prefetcher the first fetch starts keeps the following segments queued, and PostgreSQL's
 * later requests are answered from the queue (each such answer is a line in the server log);
 * recovery reaches the end of the archive with exactly the rows written.
 */
// The spool beside pg_wal, and on another filesystem (a tmpfs, as a Kubernetes emptyDir with
// medium: Memory): there a queued segment is copied into pg_wal, not renamed.
describe.each([
  ['on the data directory\'s filesystem', undefined],
  ['on a tmpfs (another filesystem than pg_wal)', '/dev/shm'],
])('wal fetch prefetch during a real replay, spool %s', (_where, spoolParent) => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let spoolDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-prefetch-replay-store-')
    spoolDir = await makeServerOwnedDir('dbb-prefetch-replay-spool-', spoolParent)
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
    if (spoolParent) expect((await fs.stat(spoolDir)).dev).not.toBe((await fs.stat(cluster.dataDir)).dev)
  })

  afterAll(async () => {
    delete process.env.WAL_SPOOL_DIR
    delete process.env.WAL_PREFETCH
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(spoolDir, {recursive: true, force: true})
  })

  it('serves segments from the queue while PostgreSQL replays, and recovery ends with every row', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE ledger (id int PRIMARY KEY, note text)')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})
    expect(backup.code).toBe(0)
    // Ten segments of WAL after the backup, each closed and archived.
    for (let round = 0; round < 10; round++) {
      await db.psql(`INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series(${round * 5000 + 1}, ${(round + 1) * 5000}) g`)
      await switchWalAndWaitArchived(db, storeDir)
    }

    const expected = await db.psql(`SELECT count(*) || ':' || md5(string_agg(note, '' ORDER BY id)) FROM ledger`)
    await db.stop()
    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(restore.code).toBe(0)
    const logFile = path.join(db.baseDir, 'server.log')
    await fs.writeFile(logFile, '')

    // The restored server's environment (PostgreSQL passes it to restore_command).
    process.env.WAL_SPOOL_DIR = spoolDir
    process.env.WAL_PREFETCH = '4'
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql(`SELECT count(*) || ':' || md5(string_agg(note, '' ORDER BY id)) FROM ledger`)).toBe(expected)
    expect(expected.startsWith('50000:')).toBe(true)

    const log = await fs.readFile(logFile, 'utf8')
    const fromQueue = [...log.matchAll(/Restored ([0-9A-F]{24}) from the prefetch queue \(dbb-wal\)/g)].map((match) => match[1])
    const restored = [...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((match) => match[1])
    // Most of the ten segments came from the queue through bin/dbb-wal, without a Node start (the
    // first request goes to storage through Node), each answer one PostgreSQL logged as restored.
    // PostgreSQL reads the last segment a second time at the end of recovery: the sh asks the
    // prefetcher for it, so a name may come from the queue as often as PostgreSQL restored it.
    expect(restored.length).toBeGreaterThanOrEqual(10)
    expect(fromQueue.length).toBeGreaterThanOrEqual(5)
    const count = (names: string[], name: string) => names.filter((each) => each === name).length
    for (const name of fromQueue) expect(count(fromQueue, name)).toBeLessThanOrEqual(count(restored, name))
    // The end of the archive was answered by the sh from a fresh storage answer, not by a Node start.
    expect(log).toMatch(/dbb-wal: [0-9A-F]{24} is not in the WAL archive \(storage answered the prefetcher after this request\)/)
  }, 300_000)
})
