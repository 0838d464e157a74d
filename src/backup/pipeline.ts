import {createHash} from 'node:crypto'
import {PassThrough, Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {createCompressor} from '../compress/codec-streams'
import {CODECS, CodecName} from '../compress/codecs'
import {createInStreamCheck} from '../compress/gzip-check'
import {programFor, startProgramCompressor} from '../compress/program-compressor'
import {deadBufferCollector} from '../dead-buffers'
import {AGE_CONTENT_TYPE, createEncryptor} from '../encrypt/age'
import {AbortedError} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {SpawnedTool, toolFailure} from './child-process'

/**
 * THE backup pipeline: a program's stdout → exit-code gate → compressor (parallel gzip or zstd) →
 * in-stream decode check → [age encryption] → sha256/size tap → storage, as one stream.pipeline;
 * or, with a compressor program (zstd; pigz for gzip where it is on PATH), the program writes
 * straight into the compressor and the pipeline starts at the compressor's output.
 * Nothing is written to local disk and memory stays flat whatever the size.
 *
 * Failure handling lives here, once:
 *  - `pipeline()` resolves when stdout ends, even if the program then exits non-zero, so the gate
 *    holds the stream open until the exit status is known and fails the pipeline on a bad exit:
 *    gzip never writes its trailer and the storage write is rolled back;
 *  - one AbortController links everything: a storage failure kills the program, a program failure
 *    aborts the upload, and the caller's signal (Ctrl-C, shutdown) stops both;
 *  - the first error is the one reported, not the AbortError it caused downstream.
 */

export interface StreamProgress {
  /**
   * Bytes the program produced so far (uncompressed); undefined while they are not known: the
   * producer writes into a compressor program and the codec's own program checks the stream, so
   * the count comes at the end (src/compress/gzip-check.ts, ProgramCheck).
   */
  sourceBytes: number | undefined
  /** Compressed bytes handed to storage so far. */
  storedBytes: number
}

export interface PipelineResult {
  sha256: string
  sizeBytes: number
  sourceBytes: number
  /** What the sent bytes decompressed to, checked in-stream (gzip's trailer CRC and length, zstd's frame checksum), whatever the codec. */
  gzipCheckedBytes: number
}

export interface PipelineOptions {
  /**
   * Starts the producing program; it is killed through the signal it is given. With `output`, it
   * must write there (a compressor program's stdin) instead of to its own stdout pipe.
   */
  start: (signal: AbortSignal, output?: Writable) => SpawnedTool
  commandName: string
  storage: StorageBackend
  key: string
  signal?: AbortSignal
  /** COMPRESSION (default gzip). */
  codec?: CodecName
  /** The codec's level (default: its defaultLevel in src/compress/codecs.ts). */
  compressionLevel?: number
  /** Blocks compressed in parallel (default: src/compress/defaults.ts). */
  compressionThreads?: number
  onProgress?: (progress: StreamProgress) => void
  /** ENCRYPTION_RECIPIENTS: encrypt with age after compression (src/encrypt); the check stays on the compressed plaintext, sha256 covers what is stored. */
  encryptTo?: readonly string[]
  /** gzip with dbb's in-process parallel gzip even when pigz is on PATH (its own tests). */
  inProcessGzip?: boolean
  /** dbb reads the producer's output (a wrapper taps it, `SpawnedTool.output`): compress what dbb reads, never straight from the producer. */
  outputThroughDbb?: boolean
}

export async function streamToStorage(options: PipelineOptions): Promise<PipelineResult> {
  const controller = new AbortController()
  let firstError: unknown
  const fail = (error: unknown) => {
    firstError ??= error
    controller.abort(error)
  }

  const onCallerAbort = () => fail(new AbortedError('backup interrupted'))
  if (options.signal?.aborted) throw new AbortedError('backup interrupted')
  // Parallel gzip on libuv's thread pool (src/compress): still one standard gzip file. Its jobs
  // live as long as this pipeline; an error anywhere destroys it and closes them. Created
  // before the program starts, so a bad level fails before anything runs.
  const codec = CODECS[options.codec ?? 'gzip']
  const level = options.compressionLevel ?? codec.defaultLevel
  // zstd, and gzip where igzip or pigz is on PATH: the producer writes straight into the compressor
  // program and dbb reads only compressed bytes (src/compress/program-compressor.ts says why the
  // proof stays as strong). Otherwise dbb compresses what it reads (in-process parallel gzip, or
  // the zstd program as a filter: src/compress/codec-streams.ts).
  const program = options.outputThroughDbb || (options.inProcessGzip && codec.name === 'gzip') ? undefined : programFor(codec.name, level)
  const directCompressor = program && startProgramCompressor(program, {level, threads: options.compressionThreads})
  const compressor = directCompressor ? undefined : createCompressor(codec.name, {level, threads: options.compressionThreads})
  const encryptor = options.encryptTo ? createEncryptor(options.encryptTo) : undefined
  options.signal?.addEventListener('abort', onCallerAbort, {once: true})

  const tool = options.start(controller.signal, directCompressor?.input)
  directCompressor?.detachInput()
  if (directCompressor && tool.child.stdout !== null) {
    // A producer writing to its own pipe would leave the compressor an empty, valid stream.
    tool.child.kill('SIGKILL')
    options.signal?.removeEventListener('abort', onCallerAbort)
    await Promise.all([directCompressor.terminate(), encryptor?.terminate()])
    throw new Error(`${options.commandName} was started without the compressor program as its output`)
  }

  const progress = {sourceBytes: 0 as number | undefined, storedBytes: 0}
  const hash = createHash('sha256')
  // Every chunk dbb reads from a program is a fresh Buffer, dead once passed on: they are
  // collected as they go (src/dead-buffers.ts), counted where dbb reads them: pg_dump's output
  // where dbb compresses it (which also paces the decoder's output, the same bytes), else the
  // compressor program's output and, where Node's decoder checks it, what that decoder writes.
  // Only compressed bytes reach dbb with a compressor program and a decoder program, and
  // collecting them did not change the peak at 1× (session 10), but at 10× they and the read-back
  // were what put it over 100 MB (BENCHMARKS.md, "Session 22").
  const collectDeadBuffers = deadBufferCollector()

  async function* exitCodeGate(source: AsyncIterable<Buffer>) {
    let produced = 0
    for await (const chunk of source) {
      produced += chunk.length
      progress.sourceBytes = produced
      collectDeadBuffers(chunk.length)
      yield chunk
    }

    const status = await tool.exited
    if (status.code !== 0) throw toolFailure(options.commandName, status, tool.stderr())
  }

  // The compressor program's output ends when the producer closed its end of the pipe: the
  // stream is complete only if the compressor exited 0 (it read everything and wrote its
  // checksum) and then the producer exited 0 (what it wrote was all of it). The compressor is
  // asked first: when it died, the producer's SIGPIPE is a consequence, not the cause.
  async function* programExitGate(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      collectDeadBuffers(chunk.length)
      yield chunk
    }

    const compressorFailure = directCompressor!.failure(await directCompressor!.exited)
    if (compressorFailure) throw compressorFailure
    const status = await tool.exited
    if (status.code !== 0) throw toolFailure(options.commandName, status, tool.stderr())
  }

  // Decompresses what is sent as it is sent (zlib's thread pool, or the codec's program), so the
  // stream is proven a whole gzip/zstd of the program's output before storage sees its end
  // (see src/compress/gzip-check.ts).
  // The codec's program checks where the compressor is a program, unless age encrypts: then its
  // processes took CPU from age and from dbb's main thread, which carries every encrypted byte
  // (measured: encryption cost +9–19 % on top of compression with the program check, +0–1 % with
  // Node's; BENCHMARKS.md, "Session 8").
  const gzipCheck = createInStreamCheck(codec.name, directCompressor && encryptor === undefined ? program?.program : undefined)
  // Node's decoder writes the whole dump into dbb's heap (encrypted backups, or no decoder program).
  const nodeDecodes = gzipCheck.decodedBytes !== undefined
  let gzipCheckedBytes = 0
  let decodedCollected = 0
  async function* checkCompressed(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      await gzipCheck.write(chunk)
      if (directCompressor && nodeDecodes) {
        const decoded = gzipCheck.decodedBytes ?? 0
        collectDeadBuffers(decoded - decodedCollected)
        decodedCollected = decoded
      }

      // With a compressor program, what the producer wrote is known only decoded.
      if (directCompressor) progress.sourceBytes = gzipCheck.decodedBytes
      yield chunk
    }

    gzipCheckedBytes = await gzipCheck.finish()
    // With a compressor program, what the check decoded is what the producer wrote (program-compressor.ts).
    if (directCompressor) progress.sourceBytes = gzipCheckedBytes
    if (gzipCheckedBytes !== progress.sourceBytes) {
      throw new Error(`the compressed stream decompresses to ${gzipCheckedBytes} bytes, ${options.commandName} produced ${progress.sourceBytes}`)
    }
  }

  // What storage receives: the compressed stream, or (encrypted) the age file around it.
  async function* hashAndCount(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      hash.update(chunk)
      progress.storedBytes += chunk.length
      options.onProgress?.(progress)
      yield chunk
    }
  }

  const body = new PassThrough()
  // @types/node types pipeline() for at most four stages between source and destination.
  const stages = pipeline as unknown as (...streams: unknown[]) => Promise<void>
  const head = directCompressor ? [directCompressor.output, programExitGate] : [tool.output ?? tool.child.stdout, exitCodeGate, compressor]
  const produce = stages(...head, checkCompressed, ...(encryptor ? [encryptor] : []), hashAndCount, body, {signal: controller.signal}).catch((error: unknown) => fail(error))
  const store = options.storage
    .put(options.key, body as Readable, {signal: controller.signal, overwrite: false, contentType: encryptor ? AGE_CONTENT_TYPE : codec.contentType})
    .catch((error: unknown) => {
      fail(error)
      return undefined
    })

  try {
    const [, stored] = await Promise.all([produce, store])
    // The program may still be flushing stderr or exiting after a failure elsewhere.
    const status = await tool.exited
    if (firstError === undefined && status.code !== 0) fail(toolFailure(options.commandName, status, tool.stderr()))
    if (firstError !== undefined) throw firstError
    const sizeBytes = progress.storedBytes
    if (stored && stored.sizeBytes !== sizeBytes) {
      throw new Error(`storage reports ${stored.sizeBytes} bytes for ${options.key}, but ${sizeBytes} were sent`)
    }

    return {sha256: hash.digest('hex'), sizeBytes, sourceBytes: gzipCheckedBytes, gzipCheckedBytes}
  } finally {
    options.signal?.removeEventListener('abort', onCallerAbort)
    if (tool.child.exitCode === null && tool.child.signalCode === null) tool.child.kill('SIGKILL')
    gzipCheck.destroy()
    await Promise.all([compressor?.terminate(), directCompressor?.terminate(), encryptor?.terminate()])
  }
}
