import {isWalFileName, parseLsn, parseSegmentSize, segmentNameForLsn, segmentPosition, walFileKind, walKey, walNameOfKey} from '../../src/wal/segments'

describe('WAL names and segment arithmetic', () => {
  it('names the segment holding an LSN the way PostgreSQL does', () => {
    const size16 = 16 * 1024 * 1024
    expect(segmentNameForLsn(1, parseLsn('0/2000028'), size16)).toBe('000000010000000000000002')
    expect(segmentNameForLsn(1, parseLsn('0/FFFFFFFF'), size16)).toBe('0000000100000000000000FF')
    expect(segmentNameForLsn(3, parseLsn('1/0'), size16)).toBe('000000030000000100000000')
    expect(segmentNameForLsn(2, parseLsn('A/3F000000'), size16)).toBe('000000020000000A0000003F')
    // 64 MiB segments: 64 per 4 GiB "log" file.
    expect(segmentNameForLsn(1, parseLsn('2/C4000000'), 64 * 1024 * 1024)).toBe('000000010000000200000031')
  })

  it('parses LSNs and wal_segment_size, and refuses anything else', () => {
    expect(parseLsn('0/2000028')).toBe(0x2000028n)
    expect(parseLsn('1/0')).toBe(0x1_0000_0000n)
    expect(() => parseLsn('0-2000028')).toThrow(/not a WAL location/)
    expect(parseSegmentSize('16MB')).toBe(16 * 1024 * 1024)
    expect(parseSegmentSize('1GB')).toBe(1024 ** 3)
    expect(() => parseSegmentSize('sixteen')).toThrow(/wal_segment_size/)
  })

  it('knows segments, timeline history, backup history and partial segments, and nothing else', () => {
    expect(walFileKind('000000010000000000000003')).toBe('segment')
    expect(walFileKind('00000002.history')).toBe('history')
    expect(walFileKind('000000010000000000000002.00000028.backup')).toBe('backup')
    expect(walFileKind('000000010000000000000005.partial')).toBe('partial')
    for (const bad of ['RECOVERYXLOG', '00000001000000000000003', '000000010000000000000003.gz', '../000000010000000000000003', '000000010000000000000003/x', '']) {
      expect(isWalFileName(bad)).toBe(false)
    }
  })

  it('maps names to storage keys and back; an unfinished upload is not a WAL file', () => {
    expect(walKey('000000010000000000000003')).toBe('wal/000000010000000000000003.gz')
    expect(walNameOfKey('wal/000000010000000000000003.gz')).toBe('000000010000000000000003')
    expect(walNameOfKey('wal/00000002.history.gz')).toBe('00000002.history')
    expect(walNameOfKey('wal/000000010000000000000003.gz.0a1b2c.partial')).toBeUndefined()
    expect(walNameOfKey('backup_20261121T030000Z.sql.gz')).toBeUndefined()
  })

  it('orders segments by position regardless of timeline, like pg_archivecleanup', () => {
    expect(segmentPosition('000000020000000000000004')! > segmentPosition('000000010000000000000003')!).toBe(true)
    expect(segmentPosition('000000010000000100000000')! > segmentPosition('0000000200000000000000FF')!).toBe(true)
    expect(segmentPosition('00000002.history')).toBeUndefined()
  })
})
