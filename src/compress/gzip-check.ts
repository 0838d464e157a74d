import {once} from 'node:events'
import type {Duplex} from 'node:stream'

import {createDecompressor} from './codec-streams'
import type {CodecName} from './codecs'

/**
 * Proves, while a backup streams, that the bytes sent to storage are one complete gzip (or zstd) stream:
 * every compressed chunk is also fed to a gunzip that discards its output and counts it. zlib
 * checks the trailer's CRC-32 and length itself, so `finish()` resolving means the stream is whole
 * and uncorrupted, and the count says how many bytes it decompresses to. zstd the same way: the
 * frame's XXH64 content checksum (the compressor writes it, src/compress/codec-streams.ts) is
 * verified by the decoder at the frame's end.
 *
 * Why not decompress the stored object after the upload (what verify.ts does otherwise): that is a
 * second, sequential pass over the whole backup. Node runs zlib streams on the libuv thread pool,
 * so this check overlaps with the dump instead. The read-back after the upload still hashes what
 * storage returns, so "stored == sent" and "sent is valid gzip" together prove the stored object.
 */
export class InStreamGunzipCheck {
  private readonly gunzip: Duplex
  private decompressedBytes = 0
  private failure?: Error
  private readonly ended: Promise<void>

  constructor(private readonly codec: CodecName = 'gzip') {
    // Output chunks of 128 KiB: each chunk is a round trip between the thread pool and the main
    // thread, and at zlib's default 16 KiB those round trips cost more main-thread time than the
    // inflating; but a 512 KiB output buffer no longer stays in the core's cache while it is
    // filled: inflating a 106 MB dump took ≈ 20 % more CPU with 512 KiB chunks than with 128 KiB
    // (zstd a few percent; BENCHMARKS.md "The lean pipeline").
    this.gunzip = createDecompressor(codec, {chunkSize: 128 * 1024})
    this.gunzip.on('data', (chunk: Buffer) => {
      this.decompressedBytes += chunk.length
    })
    this.ended = new Promise<void>((resolve, reject) => {
      this.gunzip.once('end', resolve)
      this.gunzip.once('error', (error: Error) => {
        this.failure = new Error(`the compressed stream failed its in-stream ${this.codec} check: ${error.message}`)
        reject(this.failure)
      })
    })
    this.ended.catch(() => {}) // reported by write() or finish()
  }

  /** Bytes decompressed so far. */
  get decodedBytes(): number {
    return this.decompressedBytes
  }

  /** Feeds one compressed chunk; waits while the checker is behind, so memory stays bounded. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure
    if (!this.gunzip.write(chunk)) await Promise.race([once(this.gunzip, 'drain'), this.ended])
  }

  /** Ends the stream; resolves with the decompressed size once zlib accepted the trailer. */
  async finish(): Promise<number> {
    if (this.failure) throw this.failure
    this.gunzip.end()
    await this.ended
    return this.decompressedBytes
  }

  destroy(): void {
    this.gunzip.destroy()
  }
}
