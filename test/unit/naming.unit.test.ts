import {backupIdOfKey, compactUtc, isBackupId, newBackupId, parseBackupId} from '../../src/backup/naming'
import {parseDuration, toIsoDuration} from '../../src/duration'

describe('backup ids', () => {
  it('are <prefix>_<UTC yyyyMMddTHHmmssZ>.sql.gz', async () => {
    const id = await newBackupId('backup', new Date('2026-11-21T03:04:05.678Z'), async () => false)
    expect(id).toBe('backup_20261121T030405Z.sql.gz')
    expect(parseBackupId(id)).toEqual({prefix: 'backup', timestamp: '20261121T030405Z', sequence: 1, kind: 'sql', codec: 'gzip', encrypted: false})
  })

  it('end in .zst with COMPRESSION=zstd, and parse back to their codec', async () => {
    const id = await newBackupId('backup', new Date('2026-11-21T03:04:05.678Z'), async () => false, 'tar', 'zstd')
    expect(id).toBe('backup_20261121T030405Z.tar.zst')
    expect(parseBackupId(id)).toEqual({prefix: 'backup', timestamp: '20261121T030405Z', sequence: 1, kind: 'tar', codec: 'zstd', encrypted: false})
    expect(parseBackupId('backup_20261121T030405Z.sql.lz4')).toBeUndefined()
  })

  it('get a -N suffix when the second is already taken', async () => {
    const taken = new Set(['db_20261121T030405Z.sql.gz', 'db_20261121T030405Z-2.sql.gz'])
    expect(await newBackupId('db', new Date('2026-11-21T03:04:05Z'), async (id) => taken.has(id))).toBe('db_20261121T030405Z-3.sql.gz')
  })

  it.each(['../etc/passwd', 'backup_20261121T030405Z.sql.gz/..', '/backup_20261121T030405Z.sql.gz', 'backup_20261121T030405Z.sql.gz\0', 'x'.repeat(10_000), '%2e%2e%2f', 'backup_2026.sql.gz', ''])(
    'rejects %j',
    (candidate) => expect(isBackupId(candidate)).toBe(false),
  )

  it('maps storage keys back to their backup id', () => {
    expect(backupIdOfKey('b_20261121T030405Z.sql.gz')).toBe('b_20261121T030405Z.sql.gz')
    expect(backupIdOfKey('b_20261121T030405Z.sql.gz.meta.json')).toBe('b_20261121T030405Z.sql.gz')
    expect(backupIdOfKey('b_20261121T030405Z.sql.gz.meta.json.0a1b2c3d4e5f.partial')).toBe('b_20261121T030405Z.sql.gz')
    expect(backupIdOfKey('b_20261121T030405Z.sql.gz.00ff00ff00ff.partial')).toBe('b_20261121T030405Z.sql.gz')
    expect(backupIdOfKey('b_20261121T030405Z.sql.gz.1122334455667788.partial.00ff00ff00ff.partial')).toBe('b_20261121T030405Z.sql.gz')
    expect(backupIdOfKey('wal/000000010000000000000001.gz')).toBeUndefined()
    expect(backupIdOfKey('README')).toBeUndefined()
  })

  it('formats UTC compactly', () => expect(compactUtc(new Date('2026-01-02T03:04:05.999Z'))).toBe('20260102T030405Z'))
})

describe('durations', () => {
  it.each([
    ['24h', 86_400_000],
    ['30m', 1_800_000],
    ['PT24H', 86_400_000],
    ['P1D', 86_400_000],
    ['PT30M', 1_800_000],
    ['PT1H30M', 5_400_000],
    ['pt10s', 10_000],
  ])('%s = %d ms', (text, expected) => expect(parseDuration(text)).toBe(expected))

  it.each(['', '30', 'P', 'PT', 'soon', '24 hours ago', 'P1DT'])('%j is not a duration', (text) => expect(parseDuration(text)).toBeUndefined())

  it('prints ISO-8601', () => {
    expect(toIsoDuration(86_400_000)).toBe('P1D')
    expect(toIsoDuration(5_400_000)).toBe('PT1H30M')
    expect(toIsoDuration(0)).toBe('PT0S')
  })
})
