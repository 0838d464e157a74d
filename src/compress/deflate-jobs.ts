import {DeflateRaw, constants, createDeflateRaw} from 'node:zlib'

/** Bytes of preceding input a block may refer back to: deflate's whole window. */
export const DICTIONARY_SIZE = 32 * 1024

let runningProcessWide = 0

/** Raw-deflate jobs whose zlib handle is still open, in this process (tests check teardown with it). */
export function runningDeflateJobs(): number {
  return runningProcessWide
}

export interface DeflateJob {
  input: Buffer
  /** Up to 32 KiB of the input preceding this block; zlib copies it when the job starts. */
  dictionary?: Buffer
  level: number
  /** The last block ends the deflate stream (Z_FINISH); the others end byte-aligned (Z_SYNC_FLUSH). */
  last: boolean
}

/**
 * Runs raw-deflate jobs with Node's asynchronous zlib, i.e. on libuv's thread pool, so blocks
 * compress in parallel while the main thread keeps streaming. Chosen over worker threads after
 * measuring both (BENCHMARKS.md): no extra V8 isolates and no buffers crossing isolates, which
 * cost ~40–90 MB of RSS and made it creep up with the backup's size; the speed was the same.
 * The owner limits how many jobs run at once; `close()` destroys the ones still open.
 */
export class DeflateJobs {
  private readonly engines = new Set<DeflateRaw>()
  private closed = false

  /** Jobs whose zlib handle is still open. */
  get open(): number {
    return this.engines.size
  }

  deflate(job: DeflateJob): Promise<Buffer> {
    if (this.closed) return Promise.reject(new Error('the compressor is closed'))
    const engine = createDeflateRaw({
      level: job.level,
      dictionary: job.dictionary && job.dictionary.length > 0 ? job.dictionary : undefined,
      chunkSize: 32 * 1024,
      finishFlush: job.last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
    })
    this.engines.add(engine)
    runningProcessWide++
    engine.once('close', () => {
      this.engines.delete(engine)
      runningProcessWide--
    })
    const chunks: Buffer[] = []
    engine.on('data', (chunk: Buffer) => chunks.push(chunk))
    return new Promise<Buffer>((resolve, reject) => {
      engine.once('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)))
      engine.once('error', reject)
      engine.end(job.input)
    })
  }

  /** Destroys every open job and resolves once their zlib handles have closed. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all(
      [...this.engines].map(
        (engine) =>
          new Promise<void>((resolve) => {
            engine.once('close', () => resolve())
            engine.destroy()
          }),
      ),
    )
  }
}
