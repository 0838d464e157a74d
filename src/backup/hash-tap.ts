import {createHash} from 'node:crypto'

export interface HashTap {
  /** A pipeline stage passing chunks through unchanged while hashing and counting them. */
  stage(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer>
  /** Bytes seen so far. */
  readonly sizeBytes: number
  /** The sha256 (hex) of everything seen; call once the stream has ended. */
  sha256(): string
}

/**
 * The sha256 + byte count every path that moves a backup needs (store, read back, download,
 * restore): computed over the exact bytes as they stream, never over a second copy.
 */
export function hashTap(onChunk?: (sizeBytes: number) => void): HashTap {
  const hash = createHash('sha256')
  let sizeBytes = 0
  let digest: string | undefined
  return {
    async *stage(source) {
      for await (const chunk of source) {
        hash.update(chunk)
        sizeBytes += chunk.length
        onChunk?.(sizeBytes)
        yield chunk
      }
    },
    get sizeBytes() {
      return sizeBytes
    },
    sha256() {
      digest ??= hash.digest('hex')
      return digest
    },
  }
}
