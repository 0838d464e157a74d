import {createWriteStream} from 'node:fs'
import * as fs from 'node:fs/promises'
import {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {compose, createDecryptor} from '../encrypt/age'
import {OperationError} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {hashTap} from './hash-tap'
import type {BackupMetadata} from './metadata'

/**
 * Streams a stored dump to `destination` while hashing it. A file is written under a temporary
 * name and renamed only once size and sha256 match the sidecar, so a corrupted or truncated
 * download never sits under the real name. For a stream (stdout) the bytes are already gone when a
 * mismatch shows, so the caller must exit non-zero — which it does, as this throws.
 */
export async function downloadBackup(
  storage: StorageBackend,
  backup: BackupMetadata,
  destination: {file: string} | {stream: Writable},
  options: {signal?: AbortSignal; onProgress?: (bytes: number) => void; decryptWith?: string} = {},
): Promise<{sizeBytes: number; sha256: string}> {
  const tap = hashTap(options.onProgress)
  const checkIntegrity = () => {
    const {sizeBytes} = tap
    const sha256 = tap.sha256()
    if (sizeBytes !== backup.sizeBytes || sha256 !== backup.sha256) {
      throw new OperationError(
        `integrity check failed for ${backup.id}: got ${sizeBytes} bytes with sha256 ${sha256}, ` +
          `its metadata says ${backup.sizeBytes} bytes with sha256 ${backup.sha256}; the stored dump is damaged or was altered`,
      )
    }

    return {sizeBytes, sha256}
  }

  const source = await storage.get(backup.id, {signal: options.signal})
  // --decrypt: the stored (hashed) bytes go through age -d on the way out; age authenticates every chunk, the hash still covers what is stored.
  const decrypted = options.decryptWith === undefined ? tap.stage : compose(tap.stage, createDecryptor(options.decryptWith))
  if ('stream' in destination) {
    await pipeline(source, decrypted, destination.stream, {end: destination.stream !== process.stdout, signal: options.signal})
    return checkIntegrity()
  }

  const partial = `${destination.file}.dbb-partial`
  try {
    await pipeline(source, decrypted, createWriteStream(partial, {flags: 'w', mode: 0o600, flush: true}), {signal: options.signal})
    const result = checkIntegrity()
    await fs.rename(partial, destination.file)
    return result
  } catch (error) {
    await fs.rm(partial, {force: true})
    throw error
  }
}
