import {once} from 'node:events'
import type {Duplex} from 'node:stream'

import {type ChildExit, childExit, spawnFilter, spawnReader} from '../backup/child-process'
import {ZSTD_FRAME_MAGIC, createDecompressor} from './codec-streams'
import type {CodecName} from './codecs'
import {IGZIP_DECODE_ARGS, onPath} from './program-compressor'
import {ZSTD_SIZE_REPORT, ZSTD_TEST_ARGS, zstdReportsSize} from './zstd-probe'

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
export class InStreamGunzipCheck implements InStreamCheck {
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

/** What the pipeline needs of an in-stream check, whichever decoder runs it. */
export interface InStreamCheck {
  /** Bytes decoded so far; undefined while a check that counts only at its end runs (ProgramCheck). */
  readonly decodedBytes: number | undefined
  write(chunk: Buffer): Promise<void>
  finish(): Promise<number>
  destroy(): void
}

/**
 * How each compressor program's stream is checked in-stream: by the same program decoding it, the
 * decoded size learnt from `wc -c` counting the decoder's output, or from the decoder's own report.
 */
interface CheckProgram {
  codec: CodecName
  args: string[]
  reportsSize?: RegExp
  decodeArgs: string[]
}

/** The bytes every stream of a codec starts with: the decoders also read other formats (zstd -d decodes gzip, pigz -d zlib and zip). */
const MAGIC: Record<CodecName, Buffer> = {gzip: Buffer.from([0x1f, 0x8b]), zstd: ZSTD_FRAME_MAGIC}

/** Exported for bench/proofs.ts, which runs the same checks from a shell. */
export const CHECK_PROGRAMS: Record<string, CheckProgram> = {
  // pigz, not gzip: zlib's inflate and CRC-32/length check, in 0.34 s instead of 0.53 for the 108
  // MB dump (it checksums in a thread of its own). `pigz -t` reports no size (the trailer's is
  // modulo 4 GiB), so it decodes into wc.
  pigz: {codec: 'gzip', args: ['-d', '-c'], decodeArgs: ['-d', '-c']},
  // ISA-L's inflate, for what its deflate wrote: the same CRC-32/length check in a third of pigz's
  // CPU (0.73 against 2.05 user-s for 866 MB of SQL). igzip -t reports no size either: into wc.
  igzip: {codec: 'gzip', args: IGZIP_DECODE_ARGS, decodeArgs: IGZIP_DECODE_ARGS},
  // `zstd -t` is `zstd -d` with the output thrown away inside zstd: every frame decoded, its content
  // checksum verified, and the total printed on stderr. No wc, and no pipe carrying every decoded byte.
  // zstd's wording is not an interface: the probe (src/compress/zstd-probe.ts) checks it once, else
  // `zstd -d -c | wc -c`.
  zstd: {codec: 'zstd', args: ZSTD_TEST_ARGS, decodeArgs: ['-d', '-c'], reportsSize: ZSTD_SIZE_REPORT},
}

/** Whether the codec's program reports the decoded size as CHECK_PROGRAMS reads it (zstd's probe; pigz never does). */
export function reportsSizeAsExpected(codec: CodecName): boolean {
  return codec === 'zstd' && zstdReportsSize()
}

/**
 * The check done by the compressor program itself, decoding what it wrote
 * (src/compress/program-compressor.ts): `zstd -t` (decodes every frame, verifies its XXH64 content
 * checksum and its end, and reports the decoded size) or `igzip -d` / `pigz -d` (the trailer's
 * CRC-32 and length) with `wc -c` counting what it decodes, so the decoded bytes never pass through dbb. For
 * zstd that is CPU: Node's built-in decoder needed 0.41–0.56 CPU-s for the benchmark's 108 MB dump
 * (207 MB base backup), `zstd -d | wc -c` 0.20–0.24, and on two cores that CPU is taken from pg_dump
 * and the compressor (a base backup went from 1.95 s to 1.68 s). For gzip it is memory: the same CPU
 * as Node's inflate, but the 108 MB of decoded buffers no longer pass through dbb's heap, whose peak
 * RSS fell from 104–108 MB to 94–96 MB (BENCHMARKS.md, "Session 8"). The proof is the same decoding
 * and the same checksum, by a stock decoder. What it gives up is the running count: the dump's size
 * is known at the end (progress shows the stored bytes meanwhile).
 */
export class ProgramCheck implements InStreamCheck {
  readonly decodedBytes = undefined
  private readonly decoder
  /** `wc -c` reading the decoder's output; none when the decoder reports the size itself. */
  private readonly counter
  private readonly settled: Promise<{decoder: ChildExit; counter?: ChildExit}>
  private readonly spec
  private decoderSaid = ''
  private counted = ''
  private inputSeen = 0
  private failure?: Error

  /**
   * `program`: the compressor program whose stream this is, which decodes it (pigz, igzip, zstd).
   * `sizeReported`: take the decoded size from the decoder's report; false: decode into `wc -c`.
   */
  constructor(
    private readonly codec: CodecName,
    readonly program: string,
    sizeReported = reportsSizeAsExpected(codec),
  ) {
    const spec = CHECK_PROGRAMS[program]
    if (spec?.codec !== codec) throw new Error(`no in-stream ${codec} check by ${program}`)
    this.spec = spec.reportsSize && !sizeReported ? {...spec, args: spec.decodeArgs, reportsSize: undefined} : spec
    this.decoder = spawnFilter(program, this.spec.args)
    // wc reads the decoder's output pipe itself; dbb's copy of it is closed at once, so wc sees its end when the decoder exits.
    this.counter = this.spec.reportsSize ? undefined : spawnReader('wc', ['-c'], this.decoder.stdout)
    this.decoder.stdout.destroy()
    // Its last 4 KiB: the error message, or the decoded size where the decoder reports it (a short last line).
    this.decoder.stderr.setEncoding('utf8').on('data', (text: string) => (this.decoderSaid = (this.decoderSaid + text).slice(-4096)))
    this.counter?.stdout.setEncoding('utf8').on('data', (text: string) => (this.counted += text))
    // EPIPE once the decoder stopped reading (damaged input): its exit status says why.
    this.decoder.stdin.on('error', () => {})
    this.settled = Promise.all([childExit(this.decoder), this.counter && childExit(this.counter)]).then(([decoder, counter]) => ({decoder, counter}))
    void this.settled.then(({decoder}) => {
      if (decoder.code !== 0) this.fail(decoder.spawnError?.code === 'ENOENT' ? `the ${this.program} program is not on PATH` : this.said(decoder))
    })
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure
    // Only the codec's own stream passes (MAGIC).
    const magic = MAGIC[this.codec]
    if (this.inputSeen < magic.length) {
      const expected = magic.subarray(this.inputSeen, this.inputSeen + chunk.length)
      if (!chunk.subarray(0, expected.length).equals(expected)) throw this.fail(`not a ${this.codec} stream (bad magic number)`)
      this.inputSeen += Math.min(chunk.length, magic.length)
    }

    // A decoder that stopped reading (damaged input, killed) makes the pipe fail with EPIPE: its exit status is the reason given.
    if (!this.decoder.stdin.write(chunk)) await Promise.race([once(this.decoder.stdin, 'drain').catch(() => this.settled), this.settled])
    if (this.failure) throw this.failure
  }

  async finish(): Promise<number> {
    if (this.failure) throw this.failure
    if (this.inputSeen === 0) throw this.fail(`not a ${this.codec} stream (no bytes)`)
    this.decoder.stdin.end()
    const {decoder, counter} = await this.settled
    if (this.failure) throw this.failure
    if (decoder.code !== 0) throw this.fail(this.said(decoder))
    if (this.spec.reportsSize) {
      const reported = this.spec.reportsSize.exec(this.decoderSaid.trimEnd())
      if (!reported) throw this.fail(`${this.program} exited 0 without reporting the decoded size (it said "${this.decoderSaid.trim().slice(-200)}")`)
      return Number(reported[1])
    }

    const count = /^\s*(\d+)\s*$/.exec(this.counted)
    if (counter?.code !== 0 || !count) throw this.fail(`wc -c ${counter?.spawnError ? `did not start (${counter.spawnError.message})` : `exited ${counter?.code ?? counter?.signal} and printed "${this.counted.trim()}"`}`)
    return Number(count[1])
  }

  destroy(): void {
    for (const child of [this.decoder, this.counter]) if (child && child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL')
    this.decoder.stdin.destroy()
  }

  private said(status: ChildExit): string {
    const how = status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`
    const last = this.decoderSaid.trim().split('\n').slice(-2).join(' | ')
    return `${this.program} ${how}${last ? `: ${last}` : ''}`
  }

  private fail(detail: string): Error {
    this.failure ??= new Error(`the compressed stream failed its in-stream ${this.codec} check: ${detail}`)
    return this.failure
  }
}

/**
 * The in-stream check of a backup: by its compressor program decoding what it wrote, when the
 * caller names it (`pg_dump | zstd`, `pg_dump | igzip`, `pg_dump | pigz`: the program is there, and
 * dbb never held the uncompressed bytes), else Node's decoder (dbb's in-process parallel gzip, and
 * custom-format dumps, which dbb reads and compresses itself: it counts what it read, and the
 * check's count must match it; and encrypted backups, src/backup/pipeline.ts says why).
 */
export function createInStreamCheck(codec: CodecName, compressorProgram: string | undefined): InStreamCheck {
  if (compressorProgram === undefined || CHECK_PROGRAMS[compressorProgram]?.codec !== codec || !onPath(compressorProgram)) return new InStreamGunzipCheck(codec)
  const sizeReported = reportsSizeAsExpected(codec)
  return sizeReported || onPath('wc') ? new ProgramCheck(codec, compressorProgram, sizeReported) : new InStreamGunzipCheck(codec)
}
