import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivedWal, archivingSettings, switchWalAndWaitArchived} from '../helpers/wal'

interface Check {
  name: string
  status: string
  newest: string | null
  message: string
}

const statuses = (stdout: string) => (JSON.parse(stdout).checks as Check[]).map((check) => [check.name, check.status])
const checkNamed = (stdout: string, name: string) => (JSON.parse(stdout).checks as Check[]).find((check) => check.name === name)!

/** dbb check on what a real cluster archives: the WAL chain of the newest base backup, and setups without PITR. */
describe('dbb check: WAL chain and logical-only setups', () => {
  let cluster: PgCluster | undefined
  const directories: string[] = []

  afterEach(async () => {
    await cluster?.destroy()
    cluster = undefined
    for (const directory of directories.splice(0)) await fs.rm(directory, {recursive: true, force: true})
  })

  it('logical backups only: base-backup and wal are "not configured" and the check passes; CHECK_* still force them', async () => {
    cluster = await startPostgres()
    const storeDir = await tempDir('dbb-check-logical-')
    directories.push(storeDir)
    expect((await runCli(['backup', 'run'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)

    const plain = await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(plain.code).toBe(0)
    expect(statuses(plain.stdout)).toEqual([
      ['base-backup', 'not-configured'],
      ['wal', 'not-configured'],
      ['logical-backup', 'pass'],
      // No drill has run: not configured (restore drills, issue 19).
      ['drill', 'not-configured'],
    ])
    const table = await runCli(['check'], {BACKUP_LOCAL_DIR: storeDir})
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/wal\s+NOT-CONFIGURED\s+.*not configured: no archived WAL or base backup in storage/)

    const forced = await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: storeDir, CHECK_BASE_BACKUP: 'true', CHECK_WAL: 'true'})
    expect(forced.code).toBe(1)
    expect(statuses(forced.stdout)).toEqual([
      ['base-backup', 'fail'],
      ['wal', 'fail'],
      ['logical-backup', 'pass'],
      ['drill', 'not-configured'],
    ])
    expect(checkNamed(forced.stdout, 'wal').message).toBe('no archived WAL segment found')

    // Once a base backup exists, base backups and WAL are checked without being asked.
    expect((await runCli(['backup', 'run', '--type', 'base'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    const withBase = await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(statuses(withBase.stdout)).toEqual([
      ['base-backup', 'pass'],
      ['wal', 'fail'],
      ['logical-backup', 'pass'],
      ['drill', 'not-configured'],
    ])
    expect(withBase.code).toBe(1)
    const off = await runCli(['check', '--json'], {BACKUP_LOCAL_DIR: storeDir, CHECK_WAL: 'false'})
    expect(off.code).toBe(0)
    expect(statuses(off.stdout)[1]).toEqual(['wal', 'off'])
  })

  it('a segment deleted right after the base backup fails the check, naming it; a fresh .history does not hide a stalled archiver', async () => {
    const storeDir = await makeServerOwnedDir('dbb-check-chain-')
    directories.push(storeDir)
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
    const env = {BACKUP_LOCAL_DIR: storeDir, CHECK_LOGICAL_BACKUP: 'false'}
    await cluster.psql('CREATE TABLE t (id int)')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})
    expect(backup.code).toBe(0)
    const {id, firstWalSegment} = JSON.parse(backup.stdout).metadata
    for (let round = 0; round < 3; round += 1) {
      await cluster.psql(`INSERT INTO t SELECT g FROM generate_series(1, 1000) g`)
      await switchWalAndWaitArchived(cluster, storeDir)
    }

    const healthy = await runCli(['check', '--json'], env)
    expect(healthy.code).toBe(0)
    const newest = (await archivedWal(storeDir)).filter((name) => /^[0-9A-F]{24}$/.test(name)).at(-1)!
    expect(checkNamed(healthy.stdout, 'wal').message).toMatch(new RegExp(`WAL chain complete from ${firstWalSegment} \\(${id.replace(/\./g, '\\.')}\\) to ${newest}, \\d+ segments, timeline 1$`))

    // The segment right after the base backup's first one.
    const segments = (await archivedWal(storeDir)).filter((name) => /^[0-9A-F]{24}$/.test(name) && name > firstWalSegment)
    const deleted = segments[0]
    const deletedCopy = await fs.readFile(path.join(storeDir, 'wal', `${deleted}.gz`))
    await fs.rm(path.join(storeDir, 'wal', `${deleted}.gz`))
    const broken = await runCli(['check', '--json'], env)
    expect(broken.code).toBe(1)
    expect(checkNamed(broken.stdout, 'wal')).toMatchObject({status: 'fail', message: expect.stringContaining(`WAL chain broken: ${deleted} is missing (1 of`)})
    const table = await runCli(['check'], env)
    expect(table.stdout).toMatch(new RegExp(`wal\\s+FAIL\\s+.*${deleted} is missing`))

    // Put it back, then age every segment as if the archiver had stalled 2 hours ago, and drop in a fresh history file.
    await cluster.stop()
    await fs.writeFile(path.join(storeDir, 'wal', `${deleted}.gz`), deletedCopy)
    const restoreDir = await tempDir('dbb-check-history-')
    directories.push(restoreDir)
    const twoHoursAgo = new Date(Date.now() - 2 * 3600 * 1000)
    for (const file of await fs.readdir(path.join(storeDir, 'wal'))) await fs.utimes(path.join(storeDir, 'wal', file), twoHoursAgo, twoHoursAgo)
    await fs.writeFile(path.join(restoreDir, '00000009.history'), '1\t0/FF000000\tunrelated drill\n')
    expect((await runCli(['wal', 'push', path.join(restoreDir, '00000009.history')], {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    const stalled = await runCli(['check', '--json'], env)
    expect(stalled.code).toBe(1)
    const newestNow = (await archivedWal(storeDir)).filter((name) => /^[0-9A-F]{24}$/.test(name)).at(-1)!
    expect(checkNamed(stalled.stdout, 'wal')).toMatchObject({status: 'fail', newest: newestNow, message: expect.stringMatching(/^newest archived WAL segment is 2h0m old/)})
  })
})
