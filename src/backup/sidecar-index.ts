import {Readable} from 'node:stream'
import {gunzipSync, gzipSync} from 'node:zlib'

import type {ObjectInfo, StorageBackend} from '../storage/contract'

/**
 * A cache of the sidecars in one storage location, kept in the location itself: listing N backups
 * costs one LIST and one GET instead of one GET per sidecar (1,000 backups on s3rver: 4.4 s of
 * GETs; BENCHMARKS.md, "backup list").
 *
 * Never a source of truth. A backup still exists because its sidecar is listed; the index only
 * saves reading a sidecar whose listing (size and modification time) is exactly what the index
 * recorded with it, and its content is validated like a sidecar read from storage. Sidecars are
 * written once and never changed by dbb (writeSidecar: overwrite false), so a matching entry is
 * the sidecar's content; one replaced by hand changes its time and is read again. An index that is
 * missing, unreadable, damaged, of another version, or lost to a concurrent writer costs reads,
 * never an answer: entries of deleted backups are not listed, so never shown.
 *
 * Used only where it pays (INDEX_MIN_READS): a location with a few dozen backups reads them
 * directly and is never written an index. The key sorts after `wal/`: a full scan lists the keys
 * before `wal/` and after it in two ranges (listBesideWal), so the index is listed with whatever
 * follows the WAL and never adds a page to the backups' own range.
 */
export const SIDECAR_INDEX_KEY = 'zz-dbb-sidecar-index.json.gz'

/** The scan reads the index, and may write it, only when it would otherwise read this many sidecars. */
export const INDEX_MIN_READS = 32

const INDEX_VERSION = 1

export interface IndexEntry {
  sizeBytes: number
  /** The sidecar's lastModified in the listing, in milliseconds. */
  lastModified: number
  /** What the sidecar held, validated on every use (backupMetadataSchema). */
  metadata: unknown
}

/** The index, or an empty one: any failure to read or parse it only means the sidecars are read. */
export async function readSidecarIndex(storage: StorageBackend): Promise<Map<string, IndexEntry>> {
  try {
    const chunks: Buffer[] = []
    for await (const chunk of await storage.get(SIDECAR_INDEX_KEY)) chunks.push(chunk as Buffer)
    const parsed = JSON.parse(gunzipSync(Buffer.concat(chunks)).toString('utf8')) as {version?: unknown; sidecars?: unknown}
    if (parsed.version !== INDEX_VERSION || typeof parsed.sidecars !== 'object' || parsed.sidecars === null) return new Map()
    const entries = new Map<string, IndexEntry>()
    for (const [key, value] of Object.entries(parsed.sidecars as Record<string, Partial<IndexEntry>>)) {
      if (typeof value?.sizeBytes === 'number' && typeof value.lastModified === 'number' && value.metadata !== undefined) {
        entries.set(key, {sizeBytes: value.sizeBytes, lastModified: value.lastModified, metadata: value.metadata})
      }
    }

    return entries
  } catch {
    return new Map()
  }
}

/** The entry for `object` (a listed sidecar) when the index recorded exactly this listing of it. */
export function matchingEntry(index: Map<string, IndexEntry>, object: ObjectInfo | undefined): IndexEntry | undefined {
  const entry = object && index.get(object.key)
  return entry && entry.sizeBytes === object.sizeBytes && entry.lastModified === object.lastModified.getTime() ? entry : undefined
}

/** Replaces the index; a failure (read-only credentials, an outage) is the caller's to ignore: the listing it served is complete either way. */
export async function writeSidecarIndex(storage: StorageBackend, entries: Map<string, IndexEntry>): Promise<void> {
  const body = gzipSync(JSON.stringify({version: INDEX_VERSION, sidecars: Object.fromEntries(entries)}))
  await storage.put(SIDECAR_INDEX_KEY, Readable.from([body]), {overwrite: true, contentType: 'application/gzip'})
}
