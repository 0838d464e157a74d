import {randomBytes} from 'node:crypto'

import {systemIdentifierOfHeader} from '../../src/wal/system-identifier'

/** A segment's first page header as PostgreSQL writes it (XLogLongPageHeaderData, little-endian). */
function longHeader(fields: {info?: number; timeline?: number; sysid?: bigint; segmentSize?: number; blockSize?: number} = {}): Buffer {
  const header = Buffer.alloc(40)
  header.writeUInt16LE(0xd110, 0)
  header.writeUInt16LE(fields.info ?? 0x0002, 2)
  header.writeUInt32LE(fields.timeline ?? 1, 4)
  header.writeBigUInt64LE(fields.sysid ?? 7_443_412_345_678_901_234n, 24)
  header.writeUInt32LE(fields.segmentSize ?? 16 * 1024 * 1024, 32)
  header.writeUInt32LE(fields.blockSize ?? 8192, 36)
  return header
}

describe('system identifier of a WAL segment', () => {
  it('reads it from the long page header', () => {
    expect(systemIdentifierOfHeader(longHeader(), 1)).toBe('7443412345678901234')
    expect(systemIdentifierOfHeader(longHeader({timeline: 3, segmentSize: 64 * 1024 * 1024}), 3)).toBe('7443412345678901234')
  })

  it.each([
    ['zeros', Buffer.alloc(40)],
    ['too short', longHeader().subarray(0, 30)],
    ['no long-header flag', longHeader({info: 0})],
    ['another timeline than the name', longHeader({timeline: 2})],
    ['an impossible segment size', longHeader({segmentSize: 12345})],
    ['an impossible block size', longHeader({blockSize: 100})],
    ['identifier 0', longHeader({sysid: 0n})],
  ])('is undefined for %s', (_case, header) => {
    expect(systemIdentifierOfHeader(header, 1)).toBeUndefined()
  })

  it('random bytes (a test file, not a segment) almost never pass', () => {
    const passed = Array.from({length: 2000}, () => systemIdentifierOfHeader(randomBytes(40), 1)).filter((value) => value !== undefined)
    expect(passed).toEqual([])
  })
})
