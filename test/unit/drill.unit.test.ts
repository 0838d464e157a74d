import {compareContents} from '../../src/backup/contents-record'
import type {ContentsRecord} from '../../src/backup/contents-record-schema'
import {keepNewestPassedDrill} from '../../src/backup/drill-floor'
import type {BackupMetadata} from '../../src/backup/metadata'
import {backupIdOfKey} from '../../src/backup/naming'
import {planRetention} from '../../src/backup/retention'
import type {DrillState} from '../../src/drill/result'
import {SCRATCH_NAME, scratchDatabaseName} from '../../src/drill/scratch'
import {slotTaken} from '../../src/server/job-lock'

const record = (overrides: Partial<ContentsRecord> = {}): ContentsRecord => ({
  tables: [
    {schema: 'public', name: 'orders', rows: 10},
    {schema: 'Schéma', name: 'Zähler 注文', rows: 3},
  ],
  sequences: [{schema: 'public', name: 'orders_id_seq', lastValue: '10', isCalled: true, ascending: true}],
  largeObjects: 2,
  checksums: false,
  ...overrides,
})

describe('compareContents', () => {
  it('finds nothing when the restore holds what was recorded', () => {
    expect(compareContents(record(), record())).toEqual([])
  })

  it('names each table that lost or gained rows, is missing, or was not recorded (non-ASCII names quoted)', () => {
    const restored = record({
      tables: [
        {schema: 'public', name: 'orders', rows: 9},
        {schema: 'public', name: 'extra', rows: 1},
      ],
    })
    expect(compareContents(record(), restored)).toEqual([
      {kind: 'table', object: 'public.orders', expected: '10 rows', actual: '9 rows'},
      {kind: 'table', object: '"Schéma"."Zähler 注文"', expected: '3 rows', actual: 'missing'},
      {kind: 'table', object: 'public.extra', expected: 'absent', actual: '1 rows'},
    ])
  })

  it('fails a sequence only when it is behind the record (pg_dump reads sequences after the record, so ahead is expected)', () => {
    const at = (lastValue: string, isCalled = true, ascending = true) => record({sequences: [{schema: 'public', name: 'orders_id_seq', lastValue, isCalled, ascending}]})
    expect(compareContents(at('10'), at('12'))).toEqual([])
    expect(compareContents(at('10'), at('9'))).toEqual([{kind: 'sequence', object: 'public.orders_id_seq', expected: 'at least 10', actual: '9'}])
    expect(compareContents(at('10'), at('10', false))).toHaveLength(1)
    // Descending: "behind" is the larger value. Beyond 2^53 compared exactly.
    expect(compareContents(at('-10', true, false), at('-9', true, false))).toHaveLength(1)
    expect(compareContents(at('9007199254740993'), at('9007199254740992'))).toHaveLength(1)
  })

  it('compares large objects and, when both sides have them, checksums', () => {
    expect(compareContents(record(), record({largeObjects: 1}))).toEqual([{kind: 'largeObjects', object: 'large objects', expected: '2', actual: '1'}])
    const summed = (checksum: string) => record({checksums: true, tables: [{schema: 'public', name: 'orders', rows: 10, checksum}]})
    expect(compareContents(summed('1'), summed('2'))).toEqual([{kind: 'table', object: 'public.orders', expected: 'checksum 1', actual: 'checksum 2'}])
  })
})

describe('scratch database names', () => {
  it('are reserved, per source database, within 63 bytes', () => {
    expect(scratchDatabaseName('shop')).toMatch(SCRATCH_NAME)
    expect(scratchDatabaseName('shop')).not.toBe(scratchDatabaseName('shop2'))
    expect(scratchDatabaseName('ä'.repeat(60))).toMatch(SCRATCH_NAME)
  })
})

describe('retention: the newest passed drill is a floor', () => {
  const NOW = new Date('2026-11-21T12:00:00Z')
  const backup = (day: number): BackupMetadata => {
    const created = new Date(Date.UTC(2026, 10, day))
    return {
      id: `backup_202611${String(day).padStart(2, '0')}T000000Z.sql.gz`,
      type: 'logical',
      createdAt: created.toISOString(),
      sizeBytes: 1,
      sha256: 'a'.repeat(64),
      durationMs: 1,
      triggeredBy: 'cli',
      database: 'app',
      pgVersion: '15',
      format: 'plain',
      compression: 'gzip',
    }
  }

  const backups = [backup(20), backup(19), backup(18), backup(10)]
  const plan = planRetention(backups, [], {retentionDays: 0, backupsToRetain: 1, orphanGraceMs: 1}, NOW, 'backup')
  const kept = (drills: Record<number, DrillState>) =>
    keepNewestPassedDrill(plan, new Map(Object.entries(drills).map(([day, state]) => [backup(Number(day)).id, state])))
      .keep.map(({id}) => id.slice(13, 15))
      .sort()

  it('keeps the newest backup whose drill passed while newer ones failed theirs', () => {
    expect(kept({20: 'failed', 19: 'never', 18: 'passed', 10: 'passed'})).toEqual(['18', '20'])
  })

  it('changes nothing when no newer drill failed, or none passed', () => {
    expect(kept({20: 'never', 18: 'passed'})).toEqual(['20'])
    expect(kept({20: 'passed', 18: 'failed'})).toEqual(['20'])
    expect(kept({20: 'failed', 19: 'failed'})).toEqual(['20'])
  })
})

describe('backupIdOfKey', () => {
  it('counts a drill result as its backup\'s object (an orphan once the backup is gone)', () => {
    expect(backupIdOfKey('backup_20261121T030000Z.sql.gz.drill.json')).toBe('backup_20261121T030000Z.sql.gz')
    expect(backupIdOfKey('backup_20261121T030000Z.sql.gz.drill.json.0a1b.partial')).toBe('backup_20261121T030000Z.sql.gz')
  })
})

describe('slotTaken (replicas: a scheduled job finds its slot served by another replica)', () => {
  const fired = Date.parse('2026-11-21T03:00:01Z')
  const backupAt = (iso: string, durationMs = 5000) => ({createdAt: iso, durationMs})

  it('cron: a backup that started at the firing, or up to 30 s before, serves the slot; the previous slot\'s does not', () => {
    const cron = {kind: 'cron' as const, expression: '0 3 * * *'}
    expect(slotTaken(cron, backupAt('2026-11-21T03:00:00Z'), fired)).toBe(true)
    expect(slotTaken(cron, backupAt('2026-11-21T02:59:40Z'), fired)).toBe(true)
    expect(slotTaken(cron, backupAt('2026-11-20T03:00:00Z'), fired)).toBe(false)
    expect(slotTaken(cron, undefined, fired)).toBe(false)
  })

  it('interval: a backup less than one interval (minus 30 s) old serves it; the one the interval counts from does not', () => {
    const interval = {kind: 'interval' as const, intervalMs: 3600_000}
    expect(slotTaken(interval, backupAt('2026-11-21T02:59:50Z'), fired)).toBe(true)
    expect(slotTaken(interval, backupAt('2026-11-21T01:59:56Z'), fired)).toBe(false)
  })
})
