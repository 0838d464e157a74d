import {backupMetadataSchema, newestFirst, restoreSupport} from '../../src/backup/metadata'

const valid = {
  id: 'backup_20261121T030000Z.sql.gz',
  type: 'logical',
  createdAt: '2026-11-21T03:00:00.000Z',
  sizeBytes: 10,
  sha256: 'a'.repeat(64),
  durationMs: 1,
  triggeredBy: 'cli',
  database: 'app',
  pgVersion: '15.18',
  format: 'plain',
  compression: 'gzip',
}

describe('the sidecar schema: strict on what dbb relies on, lenient on the rest', () => {
  it('reads a sidecar from a newer dbb (unknown values and fields) as a backup, keeping what it does not know', () => {
    const parsed = backupMetadataSchema.parse({...valid, triggeredBy: 'webhook', type: 'incremental', compression: 'zstd', parent: 'x', encryption: {alg: 'age'}})
    expect(parsed).toMatchObject({triggeredBy: 'webhook', type: 'incremental', compression: 'zstd', parent: 'x'})
    expect(restoreSupport(parsed)).toMatch(/has type "incremental" and compression "zstd"/)
    expect(restoreSupport(backupMetadataSchema.parse(valid))).toBeUndefined()
  })

  it('tolerates informational fields that are missing or of another shape', () => {
    const {triggeredBy: _t, durationMs: _d, pgVersion: _p, ...rest} = valid
    const parsed = backupMetadataSchema.parse({...rest, database: 42, dbbVersion: {major: 9}})
    expect(parsed).toMatchObject({triggeredBy: 'unknown', durationMs: 0, pgVersion: 'unknown', database: 'unknown', dbbVersion: undefined})
  })

  // (An id that is a string but another backup's is refused by readSidecar, which knows the expected id.)
  it.each([
    ['id', 42],
    ['createdAt', 'yesterday'],
    ['sizeBytes', -1],
    ['sha256', 'abc'],
  ])('rejects a sidecar without a valid %s', (field, bad) => {
    expect(backupMetadataSchema.safeParse({...valid, [field]: undefined}).success).toBe(false)
    expect(backupMetadataSchema.safeParse({...valid, [field]: bad}).success).toBe(false)
  })

  it('orders backups newest first by the id (timestamp, then sequence), which the listing knows without a sidecar', () => {
    const ids = ['b_20261121T030000Z.sql.gz', 'b_20261121T030000Z-2.sql.gz', 'b_20261122T030000Z.tar.gz', 'b_20261120T030000Z-12.sql.gz']
    expect(ids.map((id) => ({id})).sort(newestFirst).map(({id}) => id)).toEqual([
      'b_20261122T030000Z.tar.gz',
      'b_20261121T030000Z-2.sql.gz',
      'b_20261121T030000Z.sql.gz',
      'b_20261120T030000Z-12.sql.gz',
    ])
  })
})
