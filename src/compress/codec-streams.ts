import {Duplex} from 'node:stream'
import * as zlib from 'node:zlib'

import {spawnFilter} from '../backup/child-process'
import {ConfigError, OperationError} from '../errors'
import {CodecName} from './codecs'
import {defaultCompressionThreads} from './defaults'
import {createParallelGzip} from './parallel-gzip'
import {probeZstd} from './zstd-probe'

/**
 * Compressor and decompressor streams per codec.
 *
 * gzip: dbb's own parallel gzip (src/compress/parallel-gzip.ts) and Node's gunzip.
 *
 * zstd compresses through the `zstd` program with one worker per compression thread, chosen by
 * measurement (BENCHMARKS.md, "zstd: which implementation"): Node 20 has no zstd at all, and the
 * libzstd bundled in Node 22.15+/24 is built without multithreading — `ZSTD_c_nbWorkers` is
 * accepted and silently ignored (150 MB of dump text took 0.71 s with 0 workers and 0.80 s with 2
 * on Node 24.22, while `zstd -1 -T2` took 0.46 s). The program also writes the frame's XXH64
 * content checksum (`--check`), which every decoder verifies. zstd decompresses with Node's
 * built-in decoder where the runtime has one (no process per WAL segment), else with `zstd -d`.
 */

export interface Compressor extends Duplex {
  /** Destroys the stream if it is still running and resolves once no work (thread job or program) is left. */
  terminate(): Promise<void>
}

export interface CompressorOptions {
  level: number
  /** Threads (gzip blocks in parallel) or zstd workers; default: src/compress/defaults.ts. */
  threads?: number
}

export function createCompressor(codec: CodecName, options: CompressorOptions): Compressor {
  if (codec === 'gzip') return createParallelGzip({level: options.level, threads: options.threads})
  const threads = options.threads ?? defaultCompressionThreads()
  return new ProgramFilter('zstd', ['-q', '-c', `-${options.level}`, `-T${threads}`, '--check', '--no-progress'], (detail) => new OperationError(`zstd failed while compressing (${detail})`))
}

/**
 * Output chunk for one small file compressed or decompressed whole (a WAL segment): zlib's 16 KiB
 * default costs one thread-pool round trip and one write per 16 KiB. Decompressing a 16 MiB segment
 * into a file took 110 ms of CPU with it and 50 ms with this (BENCHMARKS.md, "Session 7"). Not the
 * default for streams of any size: there, bigger chunks in flight raised the peak RSS of backups
 * and restores by 25–35 MB.
 */
export const FILE_CODEC_CHUNK = 256 * 1024

/**
 * A compressor for one small file of many compressed at once (WAL segments: the async uploader
 * stores several in parallel) where no program compresses it (gzip goes through igzip reading the
 * file itself where igzip is installed and the WAL is not encrypted: src/compress/file-programs.ts). The parallelism is across files, so each stream runs in-process on
 * one thread of libuv's pool: Node's own gzip, and Node's built-in zstd where the runtime has it (no
 * program started and no pipe copies per 16 MiB segment — on the benchmark WAL that cost the
 * uploader more CPU than compressing did; BENCHMARKS.md, "WAL archiving"). zstd frames carry the
 * XXH64 content checksum, as the program's `--check` writes. Without a built-in zstd (Node 20) the
 * program is used, as for dumps.
 */
export function createFileCompressor(codec: CodecName, level: number): Compressor {
  const zstd = (zlib as unknown as {createZstdCompress?: (options: object) => Duplex}).createZstdCompress
  if (codec === 'zstd' && zstd === undefined) return createCompressor(codec, {level, threads: 1})
  const stream =
    codec === 'gzip'
      ? zlib.createGzip({level, chunkSize: FILE_CODEC_CHUNK})
      : zstd!({chunkSize: FILE_CODEC_CHUNK, params: {[zlib.constants.ZSTD_c_compressionLevel]: level, [zlib.constants.ZSTD_c_checksumFlag]: 1}})
  return Object.assign(stream, {
    async terminate() {
      if (!stream.destroyed) stream.destroy()
      // A zlib stream's pending thread job finishes on its own; close() frees the engine once it has.
      if (!stream.closed) await new Promise((resolve) => stream.once('close', resolve))
    },
  })
}

/** Every gzip member starts with these bytes (RFC 1952, 2.3.1). */
export const GZIP_MAGIC = Buffer.from([0x1f, 0x8b])

/** Which zstd decoder to use; tests pin one, dbb takes the built-in one where Node has it. */
export type ZstdDecoder = 'builtin' | 'program'

export function zstdDecoder(): ZstdDecoder {
  return typeof (zlib as unknown as {createZstdDecompress?: unknown}).createZstdDecompress === 'function' ? 'builtin' : 'program'
}

/** A stream that decompresses `codec`; a damaged input fails it with an error isDamagedStreamError recognises. */
export function createDecompressor(codec: CodecName, options: {chunkSize?: number; zstd?: ZstdDecoder} = {}): Duplex {
  const sized = options.chunkSize ? {chunkSize: options.chunkSize} : {}
  if (codec === 'gzip') return zlib.createGunzip(sized)
  if ((options.zstd ?? zstdDecoder()) === 'builtin') {
    const create = (zlib as unknown as {createZstdDecompress: (options: object) => Duplex}).createZstdDecompress
    return create(sized)
  }

  // The zstd program also decodes gzip (and xz, lz4) input: the magic check keeps "a .zst object is a zstd stream" as strict as Node's decoder.
  return new ProgramFilter('zstd', ['-d', '-q', '-c', '--no-progress'], (detail) => new DamagedStreamError(`not a valid zstd stream (${detail})`), ZSTD_FRAME_MAGIC)
}

/** Every zstd frame starts with these bytes (RFC 8878, 3.1.1). */
export const ZSTD_FRAME_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])

/** The decoder said the compressed bytes are not a whole, valid stream of their codec. */
export class DamagedStreamError extends Error {
  readonly code = 'DBB_DAMAGED_STREAM'
}

/** True when `error` says the compressed input is damaged (zlib's Z_* and ZSTD_error_* codes, or the zstd program's refusal). */
export function isDamagedStreamError(error: unknown): boolean {
  const code = (error as {code?: unknown} | undefined)?.code
  return error instanceof DamagedStreamError || (typeof code === 'string' && (code.startsWith('Z_') || code.startsWith('ZSTD_error')))
}

/**
 * Fails with exit 2 (what to install) when `codec` needs a program that is not on PATH: checked
 * before a backup claims its id or a restore touches anything. `purpose` is what needs it. The
 * check is the zstd probe (src/compress/zstd-probe.ts): one zstd run that also tells the in-stream
 * check how to read zstd's report, so a backup starts zstd once before its dump, not twice.
 */
export async function requireCodec(codec: CodecName, purpose: 'compress' | 'decompress'): Promise<void> {
  if (codec === 'gzip' || (purpose === 'decompress' && zstdDecoder() === 'builtin')) return
  const {exit, stderr} = await probeZstd()
  if (exit.spawnError?.code === 'ENOENT') {
    const alternative = purpose === 'decompress' ? ', or run dbb on Node 22.15 or later, whose built-in zstd decoder dbb uses' : ''
    throw new ConfigError([{variable: 'COMPRESSION', message: `zstd needs the zstd program on PATH to ${purpose} (install it, e.g. apt-get install zstd${alternative})`}])
  }

  if (exit.spawnError) throw new OperationError(`the zstd program could not be started: ${exit.spawnError.message}`)
  if (exit.code !== 0) {
    const how = exit.signal ? `was ended by ${exit.signal}` : `exited with ${exit.code}`
    throw new OperationError(`the zstd program ${how} decoding a 40-byte test frame: ${stderr.trim() || 'it printed nothing'}`)
  }
}

/**
 * A program as a Duplex: what is written goes to its stdin, its stdout is what is read. The stream
 * ends only once the program exited 0; any other exit (or a kill) fails it with `failure`, so a
 * truncated output never looks like a complete one. Destroying it kills the program.
 */
export class ProgramFilter extends Duplex implements Compressor {
  private readonly child
  private readonly exited: Promise<{code: number | null; signal: NodeJS.Signals | null; spawnError?: NodeJS.ErrnoException}>
  private stderr = ''
  private pendingWrite?: () => void
  private inputSeen = 0

  constructor(
    command: string,
    args: string[],
    private readonly failure: (detail: string) => Error,
    /** The bytes the input must start with (checked here, before the program sees them). */
    private readonly magic?: Buffer,
    /** The setting that made dbb need the program, named when it is not installed. */
    missingVariable = 'COMPRESSION',
  ) {
    super({readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024})
    const child = spawnFilter(command, args)
    this.child = child
    child.stderr.setEncoding('utf8').on('data', (text: string) => (this.stderr = (this.stderr + text).slice(-4096)))
    const stdoutClosed = new Promise<void>((resolve) => child.stdout.once('close', resolve))
    this.exited = new Promise((resolve) => {
      child.once('error', (error: NodeJS.ErrnoException) => {
        if (child.pid === undefined) resolve({code: null, signal: null, spawnError: error})
      })
      // Not 'close': that waits for stdin to close too, which a program that died mid-input never
      // does while nothing is written. The exit status counts once everything it wrote was pushed.
      child.once('exit', (code, signal) => {
        child.stdin.destroy()
        void stdoutClosed.then(() => resolve({code, signal}))
      })
    })
    // EPIPE once the program stopped reading: its exit status says why.
    child.stdin.on('error', () => {})
    child.stdin.on('close', () => this.releaseWrite())
    child.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) child.stdout.pause()
    })
    void this.exited.then((status) => {
      if (this.destroyed) return
      if (status.spawnError) {
        const missing = status.spawnError.code === 'ENOENT'
        this.destroy(missing ? new ConfigError([{variable: missingVariable, message: `the ${command} program is not on PATH (install it, e.g. apt-get install ${command})`}]) : status.spawnError)
      } else if (status.code === 0) {
        this.push(null)
      } else {
        this.destroy(this.failure(describeProgramExit(command, status, this.stderr)))
      }
    })
  }

  async terminate(): Promise<void> {
    this.destroy()
    await this.exited
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.magic && !startsWithMagic(this.magic, this.inputSeen, chunk)) {
      callback(this.failure(`the input does not start with the frame magic number ${this.magic.toString('hex')}`))
      return
    }

    this.inputSeen += chunk.length
    const stdin = this.child.stdin
    if (stdin.destroyed || stdin.writableEnded) {
      callback() // the program is gone; its exit status fails this stream
      return
    }

    if (stdin.write(chunk)) {
      callback()
      return
    }

    this.pendingWrite = () => callback()
    stdin.once('drain', () => this.releaseWrite())
  }

  override _final(callback: (error?: Error | null) => void): void {
    // An input that ends before its magic number (an empty object) is not a stream of the codec,
    // though a decoder program may read nothing and exit 0.
    if (this.magic && this.inputSeen < this.magic.length) {
      callback(this.failure(`the input ends after ${this.inputSeen} bytes, before the frame magic number ${this.magic.toString('hex')}`))
      return
    }

    this.child.stdin.end()
    callback()
  }

  override _read(): void {
    this.child.stdout.resume()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) this.child.kill('SIGKILL')
    // Output nobody will read: drop it, so stdout closes and the exit status resolves.
    this.child.stdout.destroy()
    this.releaseWrite()
    void this.exited.then(() => callback(error))
  }

  private releaseWrite(): void {
    const pending = this.pendingWrite
    this.pendingWrite = undefined
    pending?.()
  }
}

/** Whether `chunk`, written after `inputSeen` bytes, keeps the input's start equal to `magic` (bytes past the magic always do). */
export function startsWithMagic(magic: Buffer, inputSeen: number, chunk: Buffer): boolean {
  if (inputSeen >= magic.length) return true
  const expected = magic.subarray(inputSeen, inputSeen + chunk.length)
  return chunk.subarray(0, expected.length).equals(expected)
}

/** How a program ended, for a message: `igzip exit code 1: <its last two lines of stderr>`. */
export function describeProgramExit(command: string, status: {code: number | null; signal: NodeJS.Signals | null; spawnError?: Error}, stderr: string): string {
  if (status.spawnError) return `${command} could not be started: ${status.spawnError.message}`
  const how = status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`
  const said = stderr.trim().split('\n').slice(-2).join(' | ')
  return said ? `${command} ${how}: ${said}` : `${command} ${how}`
}

/** A small compressed object (a timeline history) decompressed whole. */
export async function decompressBuffer(codec: CodecName, body: Buffer): Promise<Buffer> {
  const decompressor = createDecompressor(codec)
  const chunks: Buffer[] = []
  decompressor.end(body)
  for await (const chunk of decompressor) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}
