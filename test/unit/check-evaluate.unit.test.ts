import {describeFailures, evaluate, formatSeconds, logicalBackupIntervalMs} from '../../src/check/checks'

const NOW = new Date('2026-11-21T12:00:00Z')
const minutesAgo = (minutes: number) => new Date(NOW.getTime() - minutes * 60_000)

describe('dbb check evaluation', () => {
  it('passes within the limit, fails beyond it, fails when nothing exists, and reports turned-off checks', () => {
    expect(evaluate('wal', true, {name: 'W', at: minutesAgo(6)}, 7 * 60_000, NOW, 'archived WAL file')).toMatchObject({
      status: 'pass',
      ageSeconds: 360,
      maxAgeSeconds: 420,
      message: 'newest archived WAL file is 6m0s old (limit 7m0s)',
    })
    expect(evaluate('wal', true, {name: 'W', at: minutesAgo(8)}, 7 * 60_000, NOW, 'archived WAL file').status).toBe('fail')
    expect(evaluate('base-backup', true, undefined, 60_000, NOW, 'base backup')).toMatchObject({status: 'fail', message: 'no base backup found'})
    expect(evaluate('base-backup', false, undefined, 60_000, NOW, 'base backup')).toMatchObject({status: 'off', maxAgeSeconds: null})
  })

  it('describes failures one per line for alerts', () => {
    const checks = [
      evaluate('base-backup', true, {name: 'b', at: minutesAgo(60 * 24 * 8)}, 7 * 24 * 3_600_000, NOW, 'base backup'),
      evaluate('wal', true, {name: 'w', at: minutesAgo(1)}, 5 * 60_000, NOW, 'archived WAL file'),
    ]
    expect(describeFailures({ok: false, checkedAt: NOW.toISOString(), location: '/b', checks})).toEqual([
      'base-backup: newest base backup is 8d0h0m old (limit 7d0h0m)',
    ])
    expect(formatSeconds(3661)).toBe('1h1m')
  })

  it('derives the logical interval from BACKUP_INTERVAL or the gap between BACKUP_SCHEDULE runs', () => {
    expect(logicalBackupIntervalMs({kind: 'interval', intervalMs: 3_600_000})).toBe(3_600_000)
    expect(logicalBackupIntervalMs({kind: 'cron', expression: '0 3 * * *', timezone: 'UTC'}, NOW)).toBe(24 * 3_600_000)
    expect(logicalBackupIntervalMs({kind: 'cron', expression: '*/15 * * * *', timezone: 'UTC'}, NOW)).toBe(15 * 60_000)
  })
})
