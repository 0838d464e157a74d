/**
 * WAL file names and segment arithmetic. PostgreSQL names a segment `TTTTTTTTXXXXXXXXYYYYYYYY`
 * (timeline, then the segment number split into a "log" and a "seg" part, all hex); timeline
 * history files are `TTTTTTTT.history`, and backup history files
 * `<segment>.<offset>.backup`, and `<segment>.partial` the unfinished last segment of a timeline. Archived files live in storage under
 * `wal/<name>.gz` or `wal/<name>.zst` (the codec they were archived with, see COMPRESSION), `.age` after it when
 * encrypted (ENCRYPTION_RECIPIENTS); an archive may hold every combination.
 */

import {CODECS, CODEC_NAMES, CodecName, codecOfKey} from '../compress/codecs'
import {ENCRYPTED_SUFFIX, isEncryptedKey} from '../encrypt/recipients'

export const WAL_PREFIX = 'wal/'

const SEGMENT = /^[0-9A-F]{24}$/
const HISTORY = /^[0-9A-F]{8}\.history$/
const BACKUP_HISTORY = /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/
// After a promotion PostgreSQL archives the unfinished last segment of the old timeline under this name.
const PARTIAL_SEGMENT = /^[0-9A-F]{24}\.partial$/

export type WalFileKind = 'segment' | 'history' | 'backup' | 'partial'

export function walFileKind(name: string): WalFileKind | undefined {
  if (SEGMENT.test(name)) return 'segment'
  if (HISTORY.test(name)) return 'history'
  if (BACKUP_HISTORY.test(name)) return 'backup'
  if (PARTIAL_SEGMENT.test(name)) return 'partial'
  return undefined
}

export function isWalFileName(name: string): boolean {
  return walFileKind(name) !== undefined
}

/** `wal/<name>.<codec>`, with `.age` after it when encrypted (ENCRYPTION_RECIPIENTS, src/encrypt). */
export function walKey(name: string, codec: CodecName = 'gzip', encrypted = false): string {
  return `${WAL_PREFIX}${name}.${CODECS[codec].extension}${encrypted ? ENCRYPTED_SUFFIX : ''}`
}

/**
 * Every key `name` may be archived under, `preferred` codec first and, within it, the encrypted or
 * the plain form first as `preferEncrypted` says (what a fetch tries, in order): archives may mix both.
 */
export function walKeys(name: string, preferred: CodecName = 'gzip', preferEncrypted = false): string[] {
  const codecs = [preferred, ...CODEC_NAMES.filter((codec) => codec !== preferred)]
  return codecs.flatMap((codec) => [walKey(name, codec, preferEncrypted), walKey(name, codec, !preferEncrypted)])
}

/** The WAL file name a storage key holds (encrypted or not), or undefined for anything else (e.g. a `.partial` write). */
export function walNameOfKey(key: string): string | undefined {
  const codec = codecOfKey(key)
  if (!key.startsWith(WAL_PREFIX) || codec === undefined) return undefined
  const compressed = isEncryptedKey(key) ? key.slice(0, -ENCRYPTED_SUFFIX.length) : key
  const name = compressed.slice(WAL_PREFIX.length, -(CODECS[codec].extension.length + 1))
  return isWalFileName(name) ? name : undefined
}

/** `0/2000028` → 33554472n. Throws on anything that is not an LSN. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text.trim())
  if (!match) throw new Error(`"${text}" is not a WAL location (expected e.g. 0/2000028)`)
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)
}

export function isLsn(text: string): boolean {
  return /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i.test(text.trim())
}

/** Segments per 4 GiB "log" file, which is how the middle 8 hex digits of a segment name count. */
function segmentsPerLogId(segmentSize: number): bigint {
  return 0x1_0000_0000n / BigInt(segmentSize)
}

/** The segment holding `lsn` on `timeline`, as PostgreSQL's XLogFileName names it. */
export function segmentNameForLsn(timeline: number, lsn: bigint, segmentSize: number): string {
  const segmentNumber = lsn / BigInt(segmentSize)
  const perLog = segmentsPerLogId(segmentSize)
  return [BigInt(timeline), segmentNumber / perLog, segmentNumber % perLog].map((part) => part.toString(16).toUpperCase().padStart(8, '0')).join('')
}

/**
 * The position of a segment (or backup history file) in the WAL stream, ignoring its timeline, as
 * pg_archivecleanup compares them: the segment number's "log" and "seg" parts as one sortable key.
 * Undefined for timeline history files, which have no position and are always kept.
 */
export function segmentPosition(name: string): string | undefined {
  const kind = walFileKind(name)
  if (kind === 'segment' || kind === 'backup' || kind === 'partial') return name.slice(8, 24)
  return undefined
}

/** `16MB` (SHOW wal_segment_size) → 16777216. */
export function parseSegmentSize(text: string): number {
  const match = /^(\d+)\s*(B|kB|MB|GB)$/.exec(text.trim())
  if (!match) throw new Error(`unexpected wal_segment_size "${text}"`)
  const unit = {B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3}[match[2] as 'B' | 'kB' | 'MB' | 'GB']
  return Number(match[1]) * unit
}
