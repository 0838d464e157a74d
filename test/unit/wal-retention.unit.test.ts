import type {BackupMetadata} from '../../src/backup/metadata'
import {planRetention} from '../../src/backup/retention'
import type {ObjectInfo} from '../../src/storage/contract'
import {planWalPruning} from '../../src/wal/retention'

const NOW = new Date('2026-11-21T12:00:00Z')
const HOUR = 3_600_000

function base(hoursAgo: number, firstWalSegment: string, type: 'base' | 'logical' = 'base'): BackupMetadata {
  const created = new Date(NOW.getTime() - hoursAgo * HOUR)
  const stamp = created.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
  return {
    id: `backup_${stamp}.${type === 'base' ? 'tar' : 'sql'}.gz`,
    type,
    createdAt: created.toISOString(),
    sizeBytes: 10,
    sha256: 'b'.repeat(64),
    durationMs: 1000,
    triggeredBy: 'cli',
    database: type === 'base' ? '*' : 'app',
    pgVersion: '15.18',
    format: type === 'base' ? 'tar' : 'plain',
    compression: 'gzip',
    ...(type === 'base' ? {firstWalSegment, timeline: 1} : {}),
  }
}

const object = (key: string, hoursAgo = 1): ObjectInfo => ({key, sizeBytes: 100, lastModified: new Date(NOW.getTime() - hoursAgo * HOUR)})
const wal = (name: string, hoursAgo = 1) => object(`wal/${name}.gz`, hoursAgo)

describe('planWalPruning', () => {
  const archive = [
    wal('000000010000000000000001'),
    wal('000000010000000000000002'),
    wal('000000010000000000000002.00000028.backup'),
    wal('000000010000000000000003'),
    wal('00000002.history'),
    wal('000000010000000000000004.partial'),
    wal('000000020000000000000004'),
    wal('000000020000000000000005'),
  ]

  it('deletes only what comes before the oldest retained base backup, keeping its first segment, later ones and history files', () => {
    const plan = planWalPruning(archive, [base(1, '000000020000000000000004'), base(5, '000000010000000000000003')], NOW, HOUR)
    expect(plan.floor).toBe('000000010000000000000003')
    expect(plan.delete.map((entry) => entry.key)).toEqual([
      'wal/000000010000000000000001.gz',
      'wal/000000010000000000000002.gz',
      'wal/000000010000000000000002.00000028.backup.gz',
    ])
    expect(plan.delete[0].reason).toMatch(/before 000000010000000000000003/)
  })

  it('deletes no WAL at all while no base backup is retained (the first one may be in progress)', () => {
    expect(planWalPruning(archive, [], NOW, HOUR).delete).toEqual([])
  })

  it('removes unfinished uploads of every codec, encrypted or not, only after the grace period, and leaves unknown objects alone', () => {
    const unfinished = [
      'wal/000000010000000000000009.gz.0a1b2c3d.partial',
      'wal/00000001000000000000000B.zst.0a1b2c3d.partial',
      // An encrypted segment's (the crash matrix with age found these left forever).
      'wal/00000001000000000000000C.gz.age.02c1d6f91066.partial',
      'wal/00000001000000000000000D.zst.age.51329e3a0fac.partial',
      'wal/00000003.history.gz.age.0a1b2c3d.partial',
    ]
    const objects = [
      ...unfinished.map((key) => object(key, 3)),
      object('wal/00000001000000000000000A.gz.ffee.partial', 0.5),
      object('wal/README'),
      object('wal/README.0a1b2c3d.partial', 3),
      object('wal/000000010000000000000009.lz4.0a1b2c3d.partial', 3),
    ]
    expect(planWalPruning(objects, [], NOW, 2 * HOUR).delete.map((entry) => entry.key)).toEqual(unfinished)
  })
})

describe('planRetention per backup type', () => {
  it('keeps the newest of each type and counts BACKUPS_TO_RETAIN per type', () => {
    const backups = [base(1, '', 'logical'), base(2, '', 'logical'), base(3, '', 'logical'), base(50, '000000010000000000000001'), base(10, '000000010000000000000007')]
    const objects = backups.flatMap((backup) => [object(backup.id), object(`${backup.id}.meta.json`)])
    const plan = planRetention(backups, objects, {retentionDays: 0, backupsToRetain: 1, orphanGraceMs: HOUR}, NOW, 'backup')
    expect(plan.keep.map((backup) => backup.id).sort()).toEqual([backups[0].id, backups[4].id].sort())
    expect(plan.expire.map((entry) => entry.backup.id).sort()).toEqual([backups[1].id, backups[2].id, backups[3].id].sort())
  })

  it('never expires the only base backup, however old, while logical dumps are newer', () => {
    const backups = [base(1, '', 'logical'), base(24 * 30, '000000010000000000000001')]
    const plan = planRetention(backups, [], {retentionDays: 7, orphanGraceMs: HOUR}, NOW, 'backup')
    expect(plan.expire).toEqual([])
  })
})
