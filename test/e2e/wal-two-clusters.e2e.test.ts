import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivedWal, archivingSettings, switchWalAndWaitArchived, waitFor} from '../helpers/wal'

/** Two real clusters pointed at one archive by mistake: detected by system identifier, refused by wal push and dbb check. */
describe('two clusters, one WAL archive', () => {
  let first: PgCluster | undefined
  let second: PgCluster | undefined
  let storeDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-two-clusters-')
  })

  afterAll(async () => {
    await first?.destroy()
    await second?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  it('the archive records its cluster; the other cluster\'s archive_command fails (PostgreSQL retries), storing nothing; check fails on a foreign segment', async () => {
    first = await startPostgres({settings: archivingSettings(storeDir)})
    await first.psql('CREATE TABLE a AS SELECT 1 AS x')
    await switchWalAndWaitArchived(first, storeDir)
    const firstId = await first.psql('SELECT system_identifier FROM pg_control_system()')
    expect((await fs.readFile(path.join(storeDir, 'wal', 'system-identifier'), 'utf8')).trim()).toBe(firstId)
    const archivedByFirst = await archivedWal(storeDir)

    second = await startPostgres({settings: archivingSettings(storeDir)})
    const secondId = await second.psql('SELECT system_identifier FROM pg_control_system()')
    expect(secondId).not.toBe(firstId)
    await second.psql('CREATE TABLE b AS SELECT 2 AS y')
    const refused = await second.psql('SELECT pg_walfile_name(pg_switch_wal())')
    await waitFor('a failed archive attempt', async () => ((await second!.psql('SELECT failed_count FROM pg_stat_archiver')) !== '0' ? true : undefined))
    expect(await second.psql('SELECT archived_count FROM pg_stat_archiver')).toBe('0')
    expect(await archivedWal(storeDir)).toEqual(archivedByFirst)
    const log = await fs.readFile(path.join(second.baseDir, 'server.log'), 'utf8')
    expect(log).toContain(`belongs to the cluster with system identifier ${secondId}, but the WAL archive at ${storeDir} holds the WAL of ${firstId}: two clusters are pointed at one location`)

    // A segment of the second cluster that reached the archive anyway (copied by hand, another tool): check names it.
    const newest = archivedByFirst.filter((name) => /^[0-9A-F]{24}$/.test(name)).at(-1)!
    const planted = `${newest.slice(0, 16)}${(Number.parseInt(newest.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`
    await fs.writeFile(path.join(storeDir, 'wal', `${planted}.gz`), gzipSync(await fs.readFile(path.join(second.dataDir, 'pg_wal', refused))))
    const check = await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: storeDir, CHECK_BASE_BACKUP: 'false', CHECK_LOGICAL_BACKUP: 'false'})
    expect(check.code).toBe(1)
    const wal = JSON.parse(check.stdout).checks.find((entry: {name: string}) => entry.name === 'wal')
    expect(wal).toMatchObject({status: 'fail', message: expect.stringContaining(`${planted} belongs to the cluster with system identifier ${secondId}, but this WAL archive holds the WAL of ${firstId}`)})
  })
})
