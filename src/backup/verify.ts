import {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {createDecompressor, isDamagedStreamError} from '../compress/codec-streams'
import {codecOfKey} from '../compress/codecs'
import {deadBufferCollector} from '../dead-buffers'
import {OperationError} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {hashTap} from './hash-tap'

export interface StoredDumpCheck {
  sha256: string
  sizeBytes: number
  uncompressedBytes: number
}

/**
 * Reads a stored object back in one pass, hashing the bytes storage returns and decompressing
 * them completely. Proves that what is stored is exactly what was sent (a store that alters bytes,
 * e.g. by keeping transfer framing inside the object, fails here) and that the compressed stream
 * (gzip or zstd, as the key's extension says) is whole.
 */
export async function readBackStoredDump(
  storage: StorageBackend,
  key: string,
  signal?: AbortSignal,
  {decompress = true}: {decompress?: boolean} = {},
): Promise<StoredDumpCheck> {
  // Every chunk read (and decoded) is a fresh Buffer, dead at once. A read-back runs at disk speed,
  // far faster than the backup's stream, and V8 let them pile up: at 10× the default dump that
  // was 4–5 MB over the stream's own peak (BENCHMARKS.md, "Session 22"). Collected as read.
  const collectDeadBuffers = deadBufferCollector()
  let readBytes = 0
  const tap = hashTap((sizeBytes) => {
    collectDeadBuffers(sizeBytes - readBytes)
    readBytes = sizeBytes
  })
  let uncompressedBytes = 0

  const discard = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      uncompressedBytes += chunk.length
      collectDeadBuffers(chunk.length)
      callback()
    },
  })
  try {
    if (decompress) await pipeline(await storage.get(key, {signal}), tap.stage, createDecompressor(codecOfKey(key) ?? 'gzip'), discard, {signal})
    else await pipeline(await storage.get(key, {signal}), tap.stage, new Writable({write: (_chunk, _encoding, callback) => callback()}), {signal})
  } catch (error) {
    if (isDamagedStreamError(error)) {
      throw new OperationError(`stored ${key} is not a complete ${codecOfKey(key) ?? 'gzip'} stream: ${(error as Error).message}`)
    }

    throw error
  }

  return {sha256: tap.sha256(), sizeBytes: tap.sizeBytes, uncompressedBytes}
}

/** Throws unless the stored object matches what the pipeline computed while sending it. */
export async function verifyStoredDump(
  storage: StorageBackend,
  key: string,
  expected: {sha256: string; sizeBytes: number; sourceBytes: number; gzipCheckedBytes?: number},
  signal?: AbortSignal,
): Promise<void> {
  // When the pipeline already decompressed exactly what it sent (src/compress/gzip-check.ts), the
  // read-back only has to prove stored == sent (size + sha256); it skips a second decompression.
  const decompress = expected.gzipCheckedBytes !== expected.sourceBytes
  const actual = await readBackStoredDump(storage, key, signal, {decompress})
  if (actual.sizeBytes !== expected.sizeBytes) {
    throw new OperationError(`verification of ${key} failed: storage returned ${actual.sizeBytes} bytes, ${expected.sizeBytes} were sent`)
  }

  if (actual.sha256 !== expected.sha256) {
    throw new OperationError(`verification of ${key} failed: sha256 of the stored object is ${actual.sha256}, expected ${expected.sha256}`)
  }

  if (decompress && actual.uncompressedBytes !== expected.sourceBytes) {
    throw new OperationError(
      `verification of ${key} failed: it decompresses to ${actual.uncompressedBytes} bytes, pg_dump produced ${expected.sourceBytes}`,
    )
  }
}
