import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived, waitForPromotion} from '../helpers/wal'

/** Retention with base backups and archived WAL: what prune removes, and that what it keeps still restores. */
describe('dbb prune with base backups and archived WAL (real PostgreSQL)', () => {
  let cluster: PgCluster
  let storeDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-walprune-store-')
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  const walNames = async () => (await fs.readdir(path.join(storeDir, 'wal'))).map((file) => file.replace(/\.gz$/, '')).sort()
  const baseBackup = async () => {
    const result = await runCli(['backup', 'run', '--type', 'base', '--no-prune', '--json'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})
    expect(result.code).toBe(0)
    return JSON.parse(result.stdout).metadata as {id: string; firstWalSegment: string}
  }

  it('deletes the older base backup and the WAL only it needed, keeps every segment the retained one needs, per-type floors hold', async () => {
    await cluster.psql('CREATE TABLE ledger (id int PRIMARY KEY)')
    await cluster.psql('INSERT INTO ledger SELECT generate_series(1, 100)')
    const older = await baseBackup()
    await cluster.psql('INSERT INTO ledger SELECT generate_series(101, 200)')
    await switchWalAndWaitArchived(cluster, storeDir)
    const newer = await baseBackup()
    await cluster.psql('INSERT INTO ledger SELECT generate_series(201, 300)')
    await switchWalAndWaitArchived(cluster, storeDir)
    // A logical backup, newer than both: with BACKUPS_TO_RETAIN=1 it must not push out the base backups' floor.
    const logical = await runCli(['backup', 'run', '--no-prune', '--json'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})
    expect(logical.code).toBe(0)

    const before = await walNames()
    const firstNeeded = newer.firstWalSegment
    expect(before.some((name) => name.slice(8) < firstNeeded.slice(8))).toBe(true)

    const dryRun = await runCli(['prune', '--backups-to-retain', '1', '--dry-run', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(dryRun.code).toBe(0)
    expect(await walNames()).toEqual(before)

    const pruned = await runCli(['prune', '--backups-to-retain', '1', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(pruned.code).toBe(0)
    const result = JSON.parse(pruned.stdout) as {deleted: {id: string; kind: string}[]; kept: number}
    expect(JSON.parse(dryRun.stdout).deleted).toEqual(result.deleted)
    expect(result.deleted.filter((entry) => entry.kind === 'backup').map((entry) => entry.id)).toEqual([older.id])
    expect(result.kept).toBe(2)

    const after = await walNames()
    const expectedGone = before.filter((name) => !name.endsWith('.history') && name.slice(8, 24) < firstNeeded.slice(8))
    expect(result.deleted.filter((entry) => entry.kind === 'wal').map((entry) => entry.id.replace(/^wal\/|\.gz$/g, '')).sort()).toEqual(expectedGone)
    expect(after).toEqual(before.filter((name) => !expectedGone.includes(name)))
    expect(after).toContain(firstNeeded)

    const listed = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: storeDir})).stdout) as {id: string; type: string}[]
    expect(listed.map((entry) => entry.type).sort()).toEqual(['base', 'logical'])
    expect(listed.find((entry) => entry.type === 'base')!.id).toBe(newer.id)

    // What prune kept is enough: the retained base backup restores and replays to the last row.
    await cluster.stop()
    await fs.rm(cluster.dataDir, {recursive: true, force: true})
    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', cluster.dataDir], {BACKUP_LOCAL_DIR: storeDir})
    expect(restore.code).toBe(0)
    await cluster.start()
    await waitForPromotion(cluster)
    expect(await cluster.psql('SELECT count(*) FROM ledger')).toBe('300')
  }, 300_000) // two base backups, WAL switches and a full replay: minutes on a loaded 2-core machine
})
