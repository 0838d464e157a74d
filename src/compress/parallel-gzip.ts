import {Duplex} from 'node:stream'
import {crc32} from 'node:zlib'

import {defaultCompressionThreads} from './defaults'
import {DICTIONARY_SIZE, DeflateJobs} from './deflate-jobs'

/**
 * Parallel gzip in the style of pigz: the input is cut into fixed-size blocks, each block is
 * raw-deflated on libuv's thread pool (src/compress/deflate-jobs.ts) with the previous 32 KiB of input as its dictionary (so the
 * ratio stays within a fraction of a percent of single-threaded gzip), and every block but the
 * last ends with a sync flush, which byte-aligns it so the blocks concatenate into ONE deflate
 * stream. One gzip header goes in front and one trailer (CRC-32 of the input + its size mod 2^32)
 * at the end: the result is a single standard gzip member that gunzip, zcat and Node's zlib read.
 *
 * Why one member and not a concatenation of members: every gzip reader handles one member, while
 * multi-member files trip some tools (and tools that report the "uncompressed size" from the last
 * trailer get it wrong). The CRC is computed on this thread over the raw input in order — zlib's
 * crc32 runs at several GB/s, far from being the bottleneck.
 *
 * Memory is bounded: at most `maxBlocksInFlight` blocks are being compressed or waiting to be
 * emitted in order, plus one block being staged. Backpressure holds both ways: no more input is
 * accepted while the window is full or the compressed output is not being read.
 */

export const DEFAULT_BLOCK_SIZE = 128 * 1024

export interface ParallelGzipOptions {
  /** gzip level 1 (fastest) … 9 (smallest). */
  level: number
  /** Blocks compressed at once, each on a thread of libuv's pool (default: see defaults.ts). */
  threads?: number
  /** Bytes of input per block (default 128 KiB, as pigz). */
  blockSize?: number
  /** Blocks compressing or waiting to be emitted at once (default threads × 2). */
  maxBlocksInFlight?: number
}

export class ParallelGzip extends Duplex {
  private readonly level: number
  private readonly blockSize: number
  private readonly threads: number
  private readonly maxInFlight: number
  private readonly jobs = new DeflateJobs()

  private staged: Buffer[] = []
  private stagedBytes = 0
  /** The last 32 KiB of input so far (right-aligned): the next block's dictionary. */
  private readonly dictionary = Buffer.alloc(DICTIONARY_SIZE)
  private dictionaryLength = 0
  /** Input blocks whose job finished, reused so compressing allocates no new blocks. */
  private readonly spareBlocks: Buffer[] = []
  private compressing = 0
  private crc = 0
  private inputBytes = 0

  private dispatched = 0
  private emitted = 0
  private readonly ready = new Map<number, Buffer>()
  private waitingWrite?: (error?: Error | null) => void
  private finalCallback?: (error?: Error | null) => void
  private ending = false
  private lastDispatched = false
  /** False once push() reports a full buffer; true again when the reader calls _read. */
  private outputWanted = true

  constructor(options: ParallelGzipOptions) {
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE
    super({readableHighWaterMark: blockSize, writableHighWaterMark: blockSize})
    if (!Number.isInteger(options.level) || options.level < 1 || options.level > 9) {
      throw new RangeError(`gzip level must be a whole number from 1 to 9, got ${options.level}`)
    }

    const threads = options.threads ?? defaultCompressionThreads()
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`compression threads must be at least 1, got ${threads}`)
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`block size must be at least 1 byte, got ${blockSize}`)
    this.level = options.level
    this.blockSize = blockSize
    this.threads = threads
    this.maxInFlight = Math.max(1, options.maxBlocksInFlight ?? threads * 2)
    this.push(gzipHeader(options.level))
  }

  /** Compression jobs whose zlib handle is still open; 0 once the stream ended or was terminated. */
  get runningJobs(): number {
    return this.jobs.open
  }

  /**
   * Destroys the stream if it is still running and resolves once every zlib job it started has
   * closed. For owners that must not return while compression work remains (pipeline() may settle first).
   */
  async terminate(): Promise<void> {
    this.destroy()
    await this.jobs.close()
  }

  /** Blocks dispatched and not yet emitted (never above maxBlocksInFlight). */
  get blocksInFlight(): number {
    return this.dispatched - this.emitted
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length > 0) {
      this.staged.push(chunk)
      this.stagedBytes += chunk.length
    }

    this.waitingWrite = callback
    this.pump()
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.ending = true
    this.finalCallback = callback
    this.pump()
  }

  override _read(): void {
    this.outputWanted = true
    this.pump()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.staged = []
    this.ready.clear()
    this.jobs.close().then(
      () => callback(error),
      () => callback(error),
    )
  }

  /** Dispatches whatever the window allows, then releases the writer if it may send more. */
  private pump(): void {
    if (this.destroyed) return
    const windowOpen = () => this.blocksInFlight < this.maxInFlight && this.compressing < this.threads
    while (this.stagedBytes >= this.blockSize && windowOpen()) this.dispatch(this.blockSize, false)

    if (this.ending && !this.lastDispatched && this.stagedBytes < this.blockSize && windowOpen()) {
      this.lastDispatched = true
      this.dispatch(this.stagedBytes, true)
    }

    // Not readableLength: Readable calls _read before it removes what it reads from the buffer.
    if (this.waitingWrite && this.stagedBytes < this.blockSize && this.outputWanted) {
      const callback = this.waitingWrite
      this.waitingWrite = undefined
      callback()
    }
  }

  private dispatch(inputLength: number, last: boolean): void {
    const sequence = this.dispatched++
    const block = (this.spareBlocks.pop() ?? Buffer.allocUnsafeSlow(this.blockSize)).subarray(0, inputLength)
    this.takeStaged(block)
    this.crc = crc32(block, this.crc)
    this.inputBytes += inputLength
    // zlib copies the dictionary when the job starts, so the window can slide on right after.
    const dictionary = this.dictionary.subarray(DICTIONARY_SIZE - this.dictionaryLength)
    const job = this.jobs.deflate({input: block, dictionary, level: this.level, last})
    this.rememberTail(block)
    this.compressing++
    job.then(
      (output) => {
        this.compressing--
        this.spareBlocks.push(Buffer.from(block.buffer, block.byteOffset, this.blockSize))
        this.onCompressed(sequence, output)
      },
      (error: Error) => {
        this.compressing--
        this.destroy(error)
      },
    )
  }

  /** Slides the dictionary window over the block just cut (blocks may be shorter than 32 KiB). */
  private rememberTail(input: Buffer): void {
    if (input.length >= DICTIONARY_SIZE) {
      input.copy(this.dictionary, 0, input.length - DICTIONARY_SIZE)
    } else {
      this.dictionary.copyWithin(0, input.length)
      input.copy(this.dictionary, DICTIONARY_SIZE - input.length)
    }

    this.dictionaryLength = Math.min(DICTIONARY_SIZE, this.dictionaryLength + input.length)
  }

  private onCompressed(sequence: number, output: Buffer): void {
    if (this.destroyed) return
    this.ready.set(sequence, output)
    let block: Buffer | undefined
    while ((block = this.ready.get(this.emitted)) !== undefined) {
      this.ready.delete(this.emitted)
      this.emitted++
      this.outputWanted = this.push(block)
    }

    if (this.lastDispatched && this.emitted === this.dispatched) {
      this.finish()
      return
    }

    this.pump()
  }

  private finish(): void {
    this.push(gzipTrailer(this.crc, this.inputBytes))
    // Every job has closed before the stream reports its end: a finished pipeline leaves no work behind.
    this.jobs.close().then(
      () => {
        if (this.destroyed) return
        this.push(null)
        this.finalCallback?.()
      },
      (error: Error) => this.destroy(error),
    )
  }

  /** Moves the first `target.length` staged input bytes into `target`. */
  private takeStaged(target: Buffer): void {
    let filled = 0
    while (filled < target.length) {
      const head = this.staged[0]
      const take = Math.min(head.length, target.length - filled)
      head.copy(target, filled, 0, take)
      filled += take
      if (take === head.length) this.staged.shift()
      else this.staged[0] = head.subarray(take)
    }

    this.stagedBytes -= target.length
  }
}

/** Creates the compressor stream: `pipeline(source, createParallelGzip({level: 1}), sink)`. */
export function createParallelGzip(options: ParallelGzipOptions): ParallelGzip {
  return new ParallelGzip(options)
}

/** RFC 1952 header: deflate, no name or timestamp (reproducible), OS = Unix. */
function gzipHeader(level: number): Buffer {
  const extraFlags = level === 9 ? 2 : level === 1 ? 4 : 0
  return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extraFlags, 3])
}

function gzipTrailer(crc: number, inputBytes: number): Buffer {
  const trailer = Buffer.alloc(8)
  trailer.writeUInt32LE(crc >>> 0, 0)
  trailer.writeUInt32LE(inputBytes % 2 ** 32, 4)
  return trailer
}
