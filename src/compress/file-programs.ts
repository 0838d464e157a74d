import {fstat, write} from 'node:fs'
import {Readable, Writable} from 'node:stream'
import {promisify} from 'node:util'

import {ChildExit, childExit, spawnFilterFromFile, spawnFilterIntoFile} from '../backup/child-process'
import {OperationError} from '../errors'
import {DamagedStreamError, GZIP_MAGIC, describeProgramExit, startsWithMagic} from './codec-streams'
import type {CodecName} from './codecs'
import {IGZIP_DECODE_ARGS, ProgramSpec, igzipForFile} from './program-compressor'

/**
 * One WAL segment compressed or decoded whole by igzip, which reads or writes the segment's file
 * itself: dbb's process handles only the compressed bytes. Where igzip is not usable (not on PATH,
 * its probe failed, another codec or level), these return undefined and the caller uses Node's
 * zlib (src/compress/codec-streams.ts, createFileCompressor; createDecompressor).
 *
 * Why: gzip is the default codec, and a WAL segment compresses and decodes as a whole. On this
 * 2-core machine, 20 segments of real WAL (16 MiB each) cost 90 ms of CPU apiece to push through
 * Node's zlib and 36 ms through igzip reading the file (18 ms igzip, 18 ms dbb), and 54 ms to fetch
 * against 31–35 ms. The async uploader competes for that CPU with PostgreSQL: with igzip it drains
 * a 1 GiB backlog at 320–420 MB/s against 165–220 MB/s, and under bulk inserts it stays at most 1–2
 * segments behind where it was 3–4 (BENCHMARKS.md, "Session 24"). igzip as a plain filter, with the
 * uncompressed bytes passing through dbb's pipes, saved little on a push and cost more than it saved
 * on a fetch (dbb's own CPU for the copies).
 */

/** The program that compresses a WAL file in `codec` at `level`, or undefined (Node's zlib then). */
export function fileCompressorProgram(codec: CodecName, level: number): ProgramSpec | undefined {
  return codec === 'gzip' ? igzipForFile(level) : undefined
}

/**
 * A program that decodes one codec's stream, read on its stdin, into the file that is its stdout;
 * the facts ProgramIntoFile needs to tell a damaged object from a failing disk.
 */
export interface FileDecoderSpec {
  program: string
  args: readonly string[]
  /** The codec of the stream it reads (for messages), and the magic number that stream starts with. */
  codec: CodecName
  magic: Buffer
  /** Its exit status when the input is not a whole stream (a flipped byte, a cut, a bad header, an empty input). */
  inputRefusedStatus: number
}

/**
 * igzip decoding: exit 1 when its input is not a whole gzip stream (measured with igzip 2.30 for a
 * flipped byte, a bad CRC, a cut, a bad header, an empty input; a write error is 252).
 */
const IGZIP_INTO_FILE: FileDecoderSpec = {program: 'igzip', args: IGZIP_DECODE_ARGS, codec: 'gzip', magic: GZIP_MAGIC, inputRefusedStatus: 1}

/** The program that decodes a WAL object in `codec` straight into its file, or undefined (Node's decoder then). */
export function fileDecoderProgram(codec: CodecName): FileDecoderSpec | undefined {
  return codec === 'gzip' && igzipForFile() ? IGZIP_INTO_FILE : undefined
}

/**
 * The compressed stream of the open file `fd`, made by `spec` reading the file itself. It ends only
 * once the program exited 0, so a program that died mid-file fails the stream (and with it the
 * storage write) instead of ending it short. Destroying the stream kills the program.
 */
export function compressFileWithProgram(spec: ProgramSpec, level: number, fd: number): Readable {
  const child = spawnFilterFromFile(spec.program, spec.args(level, 1), fd)
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4096)))
  const exited = childExit(child)
  async function* output(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of child.stdout) yield chunk as Buffer
      const status = await exited
      if (status.code !== 0) throw new OperationError(`compressing failed: ${describeProgramExit(spec.program, status, stderr)}`)
    } finally {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL')
      child.stdout.destroy()
      await exited
    }
  }

  return Readable.from(output(), {objectMode: false})
}

/**
 * A Writable whose bytes `spec` decodes straight into the open file `fd` (a WAL segment's temporary
 * file). It finishes only once the program exited 0: the stream's own check (gzip's trailer CRC-32
 * and length) matched what it wrote. A damaged input — the program's `inputRefusedStatus`, and only
 * that status: any other failure is said as the program's own — fails it with a DamagedStreamError,
 * as Node's decoder would; the magic number is checked before the program sees a byte, so an empty
 * or foreign object is refused the same way. The caller fsyncs and closes `fd`.
 */
export class ProgramIntoFile extends Writable {
  private readonly child
  private readonly exited: Promise<ChildExit>
  private stderr = ''
  private inputSeen = 0

  constructor(
    private readonly spec: FileDecoderSpec,
    private readonly fd: number,
    /** What is written, for messages (the segment's destination). */
    private readonly target: string,
  ) {
    super({highWaterMark: 256 * 1024})
    const child = spawnFilterIntoFile(spec.program, [...spec.args], fd)
    this.child = child
    child.stderr.setEncoding('utf8').on('data', (text: string) => (this.stderr = (this.stderr + text).slice(-4096)))
    // EPIPE once the program stopped reading: its exit status says why.
    child.stdin.on('error', () => {})
    this.exited = childExit(child)
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const {codec, magic} = this.spec
    if (!startsWithMagic(magic, this.inputSeen, chunk)) {
      callback(new DamagedStreamError(`not a valid ${codec} stream (it does not start with the ${codec} magic number ${magic.toString('hex')})`))
      return
    }

    this.inputSeen += chunk.length
    const stdin = this.child.stdin
    if (stdin.destroyed || stdin.writableEnded) {
      callback() // the program is gone; its exit status fails this stream in _final
      return
    }

    if (stdin.write(chunk)) callback()
    else {
      const release = () => {
        stdin.off('drain', release)
        stdin.off('close', release)
        callback()
      }

      stdin.on('drain', release)
      stdin.on('close', release)
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    const {codec, magic, inputRefusedStatus} = this.spec
    if (this.inputSeen < magic.length) {
      callback(new DamagedStreamError(`not a valid ${codec} stream (it ends after ${this.inputSeen} bytes, before the ${codec} magic number)`))
      return
    }

    this.child.stdin.end()
    void this.exited.then(async (status) => {
      if (status.code === 0) callback()
      else if (status.code === inputRefusedStatus) callback(new DamagedStreamError(`not a valid ${codec} stream (${describeProgramExit(this.spec.program, status, this.stderr)})`))
      else callback(await this.writeFailure(describeProgramExit(this.spec.program, status, this.stderr)))
    })
  }

  /**
   * igzip says only "Error encountered while writing" (exit 252), not why; an operator needs the
   * why (a full disk is not a damaged archive). The file is asked again: a write of its own at the
   * file's end gets the kernel's errno (ENOSPC, EDQUOT, EIO, EROFS). The file is removed by the caller.
   */
  private async writeFailure(said: string): Promise<Error> {
    try {
      const {size} = await fstatFd(this.fd)
      const probe = Buffer.alloc(WRITE_PROBE_BYTES)
      // A short write is no error: the last free bytes were taken; the next write gets the errno.
      // A write of nothing without an error (not POSIX for a regular file) ends the probe: it stays bounded.
      for (let written = 0; written < probe.length; ) {
        const {bytesWritten} = await writeFd(this.fd, probe, written, probe.length - written, size + written)
        if (bytesWritten === 0) break
        written += bytesWritten
      }
    } catch (error) {
      return new OperationError(`writing ${this.target} failed: ${(error as Error).message} (${said})`, {cause: error})
    }

    return new OperationError(`decoding into ${this.target} failed: ${said}`)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) this.child.kill('SIGKILL')
    this.child.stdin.destroy()
    void this.exited.then(() => callback(error))
  }
}

/** Larger than any partly filled block at the file's end, so the probe write needs new blocks, as igzip's did. */
const WRITE_PROBE_BYTES = 256 * 1024
const fstatFd = promisify(fstat)
const writeFd = promisify(write)

/**
 * The uncompressed length a gzip member's trailer records (ISIZE: the input's length modulo 2^32),
 * from the stream's last 4 bytes. A whole segment (at most 1 GiB) is below 2^32, so for the one
 * member igzip writes it is exactly what igzip read from the file.
 */
export function gzipTrailerLength(lastBytes: Buffer): number {
  return lastBytes.readUInt32LE(lastBytes.length - 4)
}
