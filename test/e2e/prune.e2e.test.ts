import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {setAge, writeLocalBackup} from '../helpers/fake-backups'

const DAY = 86_400_000
const daysAgo = (days: number) => new Date(Date.now() - days * DAY)

describe('dbb prune (local storage)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  const listed = async () => JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: dir})).stdout).map((b: {id: string}) => b.id)

  it('deletes backups older than RETENTION_DAYS, sidecar and dump, and prints them', async () => {
    const fresh = await writeLocalBackup(dir, daysAgo(1))
    const old = await writeLocalBackup(dir, daysAgo(8))
    const result = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: dir, RETENTION_DAYS: '7'})
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({
      dryRun: false,
      kept: 1,
      keptBackups: [{id: fresh.id, reasons: ['newest complete logical backup (never deleted)']}],
      damaged: [],
      deleted: [{id: old.id, kind: 'backup', reason: 'older than 7 days (RETENTION_DAYS)', sizeBytes: old.sizeBytes}],
    })
    expect((await fs.readdir(dir)).sort()).toEqual([fresh.id, `${fresh.id}.meta.json`])
  })

  it('never deletes the most recent backup, however old', async () => {
    const newest = await writeLocalBackup(dir, daysAgo(30))
    await writeLocalBackup(dir, daysAgo(40))
    const result = await runCli(['prune'], {BACKUP_LOCAL_DIR: dir, RETENTION_DAYS: '7', BACKUPS_TO_RETAIN: '1'})
    expect(result.code).toBe(0)
    expect(await listed()).toEqual([newest.id])
    expect(result.stdout).toMatch(/Deleted 1 object\(s\); 1 backup\(s\) kept\./)
  })

  it('keeps at most BACKUPS_TO_RETAIN newest', async () => {
    const backups = []
    for (let index = 0; index < 5; index++) backups.push(await writeLocalBackup(dir, new Date(Date.now() - (index + 1) * 3_600_000)))
    const result = await runCli(['prune'], {BACKUP_LOCAL_DIR: dir, BACKUPS_TO_RETAIN: '2'})
    expect(result.code).toBe(0)
    expect(await listed()).toEqual([backups[0].id, backups[1].id])
  })

  it('--dry-run deletes nothing and says what it would delete', async () => {
    await writeLocalBackup(dir, daysAgo(1))
    const old = await writeLocalBackup(dir, daysAgo(9))
    const before = (await fs.readdir(dir)).sort()
    const result = await runCli(['prune', '--dry-run'], {BACKUP_LOCAL_DIR: dir})
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('Would delete 1 object(s)')
    expect(result.stdout).toContain(old.id)
    expect((await fs.readdir(dir)).sort()).toEqual(before)
  })

  it('removes orphans (a dump without sidecar, a partial write) only after ORPHAN_GRACE', async () => {
    const kept = await writeLocalBackup(dir, daysAgo(1))
    const orphanDump = path.join(dir, 'backup_20261101T000000Z.sql.gz')
    const oldPartial = path.join(dir, 'backup_20261102T000000Z.sql.gz.0123456789ab.partial')
    const freshPartial = path.join(dir, 'backup_20261103T000000Z.sql.gz.ba9876543210.partial')
    for (const file of [orphanDump, oldPartial, freshPartial]) await fs.writeFile(file, 'partial bytes')
    await setAge(orphanDump, daysAgo(2))
    await setAge(oldPartial, daysAgo(2))
    const unrelated = path.join(dir, 'notes.txt')
    await fs.writeFile(unrelated, 'not ours')
    await setAge(unrelated, daysAgo(100))

    const result = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: dir, ORPHAN_GRACE: '24h'})
    expect(result.code).toBe(0)
    const deleted = JSON.parse(result.stdout).deleted
    expect(deleted.map((entry: {id: string; kind: string}) => [entry.kind, entry.id]).sort()).toEqual([
      ['orphan', path.basename(orphanDump)],
      ['orphan', path.basename(oldPartial)],
    ])
    expect((await fs.readdir(dir)).sort()).toEqual([kept.id, `${kept.id}.meta.json`, path.basename(freshPartial), 'notes.txt'].sort())
  })

  it('only prunes its own BACKUP_NAME_PREFIX', async () => {
    const other = await writeLocalBackup(dir, daysAgo(30), {prefix: 'otherdb'})
    await writeLocalBackup(dir, daysAgo(31), {prefix: 'otherdb'})
    const mine = await writeLocalBackup(dir, daysAgo(1))
    const result = await runCli(['prune'], {BACKUP_LOCAL_DIR: dir, BACKUP_NAME_PREFIX: 'backup'})
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('Nothing to delete')
    expect(await listed()).toEqual(expect.arrayContaining([mine.id, other.id]))
  })

  it('backup list ignores a dump without its sidecar', async () => {
    const complete = await writeLocalBackup(dir, daysAgo(1))
    await fs.writeFile(path.join(dir, 'backup_20261120T000000Z.sql.gz'), 'no sidecar')
    expect(await listed()).toEqual([complete.id])
  })
})
