import {formatAge, formatElapsed} from '../../src/format'
import {planWalPruning} from '../../src/wal/retention'

/** Every age and duration a user reads has one shape: 45s, 12m, 5h3m, 3d0h (issue 16 item 9: not "4320 min"). */
describe('formatElapsed', () => {
  it.each([
    [0, '0s'],
    [45_000, '45s'],
    [12 * 60_000, '12m'],
    [(5 * 60 + 3) * 60_000, '5h3m'],
    [4320 * 60_000, '3d0h'],
    [-5000, '0s'],
  ])('%d ms is %s', (milliseconds, text) => {
    expect(formatElapsed(milliseconds)).toBe(text)
  })

  it('formatAge is the time since an instant', () => {
    expect(formatAge('2026-11-18T00:00:00Z', new Date('2026-11-21T02:30:00Z'))).toBe('3d2h')
  })

  it('prune reasons use it: an unfinished WAL upload three days old', () => {
    const now = new Date('2026-11-21T00:00:00Z')
    const upload = {key: 'wal/000000010000000000000009.gz.0a1b2c3d.partial', sizeBytes: 1, lastModified: new Date(now.getTime() - 4320 * 60_000)}
    expect(planWalPruning([upload], [], now, 3_600_000).delete[0].reason).toBe('unfinished WAL upload (age 3d0h)')
  })
})
