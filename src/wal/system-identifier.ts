import * as fs from 'node:fs/promises'
import {Readable} from 'node:stream'

import {OperationError, errorMessage, isAlreadyExists, isNotFound} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {WAL_PREFIX} from './segments'
import {createDecompressor} from '../compress/codec-streams'
import {codecOfKey} from '../compress/codecs'

/**
 * One WAL archive holds the WAL of one cluster. Two clusters pointed at one location by mistake
 * (a new initdb reusing the old location, a copy with its own archive_command) interleave segments
 * that recovery would replay as one history. Every cluster has a system identifier (chosen at
 * initdb, kept by base backups and their restores) written in the long header at the start of each
 * WAL segment; the archive records the first one it saw and refuses segments of any other.
 */

/** Not a WAL file name, so listings, retention and the chain check pass it by. */
export const SYSTEM_IDENTIFIER_KEY = `${WAL_PREFIX}system-identifier`

/** XLogLongPageHeaderData: the standard page header (24 bytes), then xlp_sysid, xlp_seg_size, xlp_xlog_blcksz. */
const LONG_HEADER_BYTES = 40
const XLP_LONG_HEADER = 0x0002

const isPowerOfTwo = (value: number) => value > 0 && (value & (value - 1)) === 0

/** What a segment's long page header says about the segment. */
export interface SegmentHeader {
  systemIdentifier: string
  /** xlp_seg_size: the server's wal_segment_size, the size of every whole segment file. */
  segmentSize: number
}

/**
 * The system identifier in a segment's first page header, or undefined when the bytes are not the
 * long header of a segment of `timeline` (a file that is not a real segment, e.g. zeros).
 */
export function systemIdentifierOfHeader(header: Buffer, timeline: number): string | undefined {
  return segmentHeaderOf(header, timeline)?.systemIdentifier
}

/** The long header at the start of a segment of `timeline`, or undefined when the bytes are not one. */
export function segmentHeaderOf(header: Buffer, timeline: number): SegmentHeader | undefined {
  if (header.length < LONG_HEADER_BYTES) return undefined
  const info = header.readUInt16LE(2)
  const headerTimeline = header.readUInt32LE(4)
  const segmentSize = header.readUInt32LE(32)
  const blockSize = header.readUInt32LE(36)
  const plausible =
    (info & XLP_LONG_HEADER) !== 0 &&
    headerTimeline === timeline &&
    isPowerOfTwo(segmentSize) &&
    segmentSize >= 1024 * 1024 &&
    segmentSize <= 1024 ** 3 &&
    isPowerOfTwo(blockSize) &&
    blockSize >= 1024 &&
    blockSize <= 32_768
  if (!plausible) return undefined
  const sysid = header.readBigUInt64LE(24)
  return sysid === 0n ? undefined : {systemIdentifier: sysid.toString(), segmentSize}
}

export async function segmentHeaderOfFile(filePath: string, timeline: number): Promise<SegmentHeader | undefined> {
  const handle = await fs.open(filePath, 'r')
  try {
    const header = Buffer.alloc(LONG_HEADER_BYTES)
    const {bytesRead} = await handle.read(header, 0, LONG_HEADER_BYTES, 0)
    return segmentHeaderOf(header.subarray(0, bytesRead), timeline)
  } finally {
    await handle.close()
  }
}

/** The system identifier of an archived (gzip or zstd, as its key says) segment, reading only its first bytes. */
export async function systemIdentifierOfArchived(storage: StorageBackend, key: string, timeline: number): Promise<string | undefined> {
  const source = await storage.get(key)
  const gunzip = createDecompressor(codecOfKey(key) ?? 'gzip')
  source.on('error', (error) => gunzip.destroy(error))
  source.pipe(gunzip)
  let header = Buffer.alloc(0)
  try {
    for await (const chunk of gunzip) {
      header = Buffer.concat([header, chunk as Buffer])
      if (header.length >= LONG_HEADER_BYTES) break
    }
  } finally {
    source.destroy()
    gunzip.destroy()
  }

  return systemIdentifierOfHeader(header, timeline)
}

/** The identifier the archive belongs to, or undefined before the first segment with one was archived. */
export async function archivedSystemIdentifier(storage: StorageBackend): Promise<string | undefined> {
  try {
    const chunks: Buffer[] = []
    for await (const chunk of await storage.get(SYSTEM_IDENTIFIER_KEY)) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8').trim()
    if (!/^\d{1,20}$/.test(text)) throw new Error(`${SYSTEM_IDENTIFIER_KEY} holds "${text.slice(0, 40)}", not a system identifier`)
    return text
  } catch (error) {
    if (isNotFound(error)) return undefined
    throw error
  }
}

/**
 * Records `systemIdentifier` as the archive's owner on first use (no overwrite: of two racing
 * pushers one wins), and fails when the archive belongs to another cluster.
 */
export async function requireSameCluster(storage: StorageBackend, name: string, systemIdentifier: string): Promise<void> {
  let owner = await archivedSystemIdentifier(storage)
  if (owner === undefined) {
    try {
      await storage.put(SYSTEM_IDENTIFIER_KEY, Readable.from([Buffer.from(`${systemIdentifier}\n`)]), {overwrite: false, contentType: 'text/plain'})
      return
    } catch (error) {
      if (!isAlreadyExists(error)) throw new OperationError(`recording the cluster of the WAL archive at ${storage.location} failed: ${errorMessage(error)}`, {cause: error})
      owner = await archivedSystemIdentifier(storage)
    }
  }

  if (owner !== systemIdentifier) {
    throw new OperationError(
      `${name} belongs to the cluster with system identifier ${systemIdentifier}, but the WAL archive at ${storage.location} holds the WAL of ${owner}: ` +
        'two clusters are pointed at one location. Nothing was stored; give this cluster its own location (another BACKUP_LOCAL_DIR, bucket or S3_PREFIX). ' +
        `If the old cluster is gone for good and this location should start over, move its wal/ away first.`,
    )
  }
}
