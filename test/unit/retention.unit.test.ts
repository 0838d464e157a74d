import type {BackupMetadata} from '../../src/backup/metadata'
import {planRetention} from '../../src/backup/retention'
import type {ObjectInfo} from '../../src/storage/contract'

const NOW = new Date('2026-11-21T12:00:00Z')
const DAY = 86_400_000

function backup(daysAgo: number, prefix = 'backup'): BackupMetadata {
  const created = new Date(NOW.getTime() - daysAgo * DAY)
  const stamp = created.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
  return {
    id: `${prefix}_${stamp}.sql.gz`,
    type: 'logical',
    createdAt: created.toISOString(),
    sizeBytes: 10,
    sha256: 'a'.repeat(64),
    durationMs: 1,
    triggeredBy: 'cli',
    database: 'app',
    pgVersion: '15.18',
    format: 'plain',
    compression: 'gzip',
  }
}

function objectsFor(backups: BackupMetadata[]): ObjectInfo[] {
  return backups.flatMap((item) => [
    {key: item.id, sizeBytes: 10, lastModified: new Date(item.createdAt)},
    {key: `${item.id}.meta.json`, sizeBytes: 1, lastModified: new Date(item.createdAt)},
  ])
}

const rules = {retentionDays: 7, orphanGraceMs: DAY}
const ids = (list: ({backup: BackupMetadata} | BackupMetadata)[]) =>
  list.map((item) => ('sha256' in item ? item.id : item.backup.id))

describe('planRetention', () => {
  it('expires backups older than RETENTION_DAYS', () => {
    const backups = [backup(1), backup(6.9), backup(7.1), backup(30)]
    const plan = planRetention(backups, objectsFor(backups), rules, NOW, 'backup')
    expect(ids(plan.keep)).toEqual(ids([backup(1), backup(6.9)]))
    expect(ids(plan.expire)).toEqual(ids([backup(7.1), backup(30)]))
    expect(plan.expire[0].reason).toBe('older than 7 days (RETENTION_DAYS)')
  })

  it('always keeps the newest backup, even when every backup is too old', () => {
    const backups = [backup(40), backup(30), backup(50)]
    const plan = planRetention(backups, objectsFor(backups), rules, NOW, 'backup')
    expect(ids(plan.keep)).toEqual(ids([backup(30)]))
    expect(ids(plan.expire)).toEqual(ids([backup(40), backup(50)]))
  })

  it('keeps at most BACKUPS_TO_RETAIN newest', () => {
    const backups = [backup(0.1), backup(0.2), backup(0.3), backup(0.4)]
    const plan = planRetention(backups, objectsFor(backups), {...rules, backupsToRetain: 2}, NOW, 'backup')
    expect(ids(plan.keep)).toEqual(ids([backup(0.1), backup(0.2)]))
    expect(plan.expire.map((entry) => entry.reason)).toEqual([
      'beyond the 2 newest (BACKUPS_TO_RETAIN)',
      'beyond the 2 newest (BACKUPS_TO_RETAIN)',
    ])
  })

  it('BACKUPS_TO_RETAIN=1 still keeps the newest; RETENTION_DAYS=0 disables the age rule', () => {
    const backups = [backup(100), backup(200)]
    expect(ids(planRetention(backups, [], {...rules, retentionDays: 0}, NOW, 'backup').keep)).toEqual(ids(backups))
    expect(ids(planRetention(backups, [], {...rules, backupsToRetain: 1}, NOW, 'backup').keep)).toEqual(ids([backup(100)]))
  })

  it('only touches backups with its own prefix', () => {
    const other = [backup(30, 'other'), backup(40, 'other')]
    const mine = [backup(20)]
    const plan = planRetention([...other, ...mine], objectsFor([...other, ...mine]), rules, NOW, 'backup')
    expect(ids(plan.keep)).toEqual(ids(mine))
    expect(plan.expire).toEqual([])
    expect(plan.orphans).toEqual([])
  })

  it('finds orphans — dumps without a sidecar and partial writes — only once older than the grace period', () => {
    const complete = [backup(1)]
    const old = new Date(NOW.getTime() - 2 * DAY)
    const fresh = new Date(NOW.getTime() - 60_000)
    const objects: ObjectInfo[] = [
      ...objectsFor(complete),
      {key: 'backup_20261101T000000Z.sql.gz', sizeBytes: 5, lastModified: old},
      {key: 'backup_20261102T000000Z.sql.gz.0a1b2c3d4e5f.partial', sizeBytes: 5, lastModified: old},
      {key: `${complete[0].id}.a1b2c3d4e5f6.partial`, sizeBytes: 5, lastModified: old},
      {key: 'backup_20261121T115900Z.sql.gz.0a1b2c3d4e5f.partial', sizeBytes: 5, lastModified: fresh},
      {key: 'other_20261101T000000Z.sql.gz', sizeBytes: 5, lastModified: old},
      {key: 'notes.txt', sizeBytes: 5, lastModified: old},
      {key: 'wal/000000010000000000000001.gz', sizeBytes: 5, lastModified: old},
    ]
    const plan = planRetention(complete, objects, rules, NOW, 'backup')
    expect(plan.orphans.map((orphan) => orphan.key).sort()).toEqual(
      ['backup_20261101T000000Z.sql.gz', 'backup_20261102T000000Z.sql.gz.0a1b2c3d4e5f.partial', `${complete[0].id}.a1b2c3d4e5f6.partial`].sort(),
    )
  })

  it('never deletes a damaged backup nor its objects, and a damaged newer backup does not weaken the floor', () => {
    const complete = [backup(30), backup(40)]
    const damaged = backup(1)
    const objects = objectsFor([...complete, damaged])
    const plan = planRetention(complete, objects, {...rules, backupsToRetain: 1}, NOW, 'backup', [damaged.id])
    // The newest complete backup stays although the damaged one is newer and BACKUPS_TO_RETAIN is 1.
    expect(ids(plan.keep)).toEqual(ids([backup(30)]))
    expect(ids(plan.expire)).toEqual(ids([backup(40)]))
    expect(plan.orphans).toEqual([])
    expect(plan.damaged).toEqual([damaged.id])
  })

  it('does not count damaged backups towards BACKUPS_TO_RETAIN (it keeps more, never fewer)', () => {
    const complete = [backup(0.2), backup(0.3)]
    const damaged = [backup(0.1).id]
    const plan = planRetention(complete, objectsFor(complete), {...rules, backupsToRetain: 2}, NOW, 'backup', damaged)
    expect(ids(plan.keep)).toEqual(ids(complete))
  })

  it('a backup still running is no orphan: its old .partial stays while its claim is fresh', () => {
    const running = 'backup_20261120T000000Z.sql.gz'
    const old = new Date(NOW.getTime() - 2 * DAY)
    const objects: ObjectInfo[] = [
      {key: `${running}.0a1b2c3d4e5f.partial`, sizeBytes: 5000, lastModified: old},
      {key: `${running}.1122334455667788.partial`, sizeBytes: 0, lastModified: new Date(NOW.getTime() - 1000)},
    ]
    expect(planRetention([], objects, rules, NOW, 'backup').orphans).toEqual([])
    // Once the heartbeat stops (a crash), both go after the grace.
    const later = new Date(NOW.getTime() + 2 * DAY)
    expect(planRetention([], objects, rules, later, 'backup').orphans.map((orphan) => orphan.key).sort()).toEqual(objects.map((object) => object.key).sort())
  })

  it('counts and floors a type it does not know (written by a newer dbb) on its own: it is kept, never pushed out', () => {
    const webhook = {...backup(50), type: 'incremental'}
    const logical = [backup(1), backup(2)]
    const plan = planRetention([webhook, ...logical], objectsFor([webhook, ...logical]), {...rules, backupsToRetain: 1}, NOW, 'backup')
    expect(ids(plan.keep)).toEqual(ids([backup(1), webhook]))
    expect(ids(plan.expire)).toEqual(ids([backup(2)]))
  })

  it('a partial write of a sidecar (a crash while writing it) is an orphan of its id, never left forever', () => {
    const old = new Date(NOW.getTime() - 2 * DAY)
    const complete = [backup(1)]
    const objects: ObjectInfo[] = [
      ...objectsFor(complete),
      {key: `${complete[0].id}.meta.json.0a1b2c3d4e5f.partial`, sizeBytes: 5, lastModified: old},
      {key: 'backup_20261101T000000Z.sql.gz', sizeBytes: 5, lastModified: old},
      {key: 'backup_20261101T000000Z.sql.gz.meta.json.0a1b2c3d4e5f.partial', sizeBytes: 5, lastModified: old},
    ]
    expect(planRetention(complete, objects, rules, NOW, 'backup').orphans.map((orphan) => orphan.key).sort()).toEqual(
      [`${complete[0].id}.meta.json.0a1b2c3d4e5f.partial`, 'backup_20261101T000000Z.sql.gz', 'backup_20261101T000000Z.sql.gz.meta.json.0a1b2c3d4e5f.partial'].sort(),
    )
  })
})
