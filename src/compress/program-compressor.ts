import {accessSync, constants} from 'node:fs'
import * as path from 'node:path'
import type {Readable, Writable} from 'node:stream'
import {gunzipSync} from 'node:zlib'

import {ExitStatus, childExit, runFilterSync, spawnFilter} from '../backup/child-process'
import {OperationError} from '../errors'
import {CodecName} from './codecs'
import {defaultCompressionThreads} from './defaults'

/**
 * A compressor PROGRAM that reads the producing program's output directly: pg_dump (or
 * pg_basebackup) writes into the compressor's stdin through a pipe between the two processes, and
 * dbb only ever sees compressed bytes. This is how a backup reaches the `pg_dump | zstd` floor:
 * before it, dbb's main thread copied every uncompressed byte from pg_dump's pipe into the
 * compressor's (BENCHMARKS.md, "The lean pipeline").
 *
 * Why the proof of integrity is as strong as when dbb saw every byte:
 *  - the bytes pg_dump wrote are exactly the bytes the compressor read: a kernel pipe between two
 *    processes neither loses, reorders nor alters bytes, and nothing else holds either end (dbb
 *    closes its copy of the write end at once, so the compressor's end-of-input is pg_dump's exit);
 *  - the compressor checksums everything it read into the stream (zstd's frame XXH64 with
 *    `--check`, gzip's trailer CRC-32 and length), and dbb decodes the compressed stream in-stream
 *    (src/compress/gzip-check.ts), so a stream that decodes is exactly what the compressor read;
 *  - the backup is complete only when the compressor AND the producer exited 0: a producer that
 *    died mid-dump leaves a well-formed but short stream, which its exit status refuses.
 * What dbb gave up is its own count of pg_dump's bytes, which only ever proved the Node pipe
 * between the two; the decoded count now is that number (`uncompressedBytes`; progress counts the
 * stored bytes, since the codec's program decodes and counts at the end, src/compress/gzip-check.ts).
 */

export interface ProgramCompressor {
  /** Where the producer writes: hand it to the producer's spawn as its stdout, then call `detachInput()`. */
  readonly input: Writable
  /** The compressed stream. */
  readonly output: Readable
  /** Closes dbb's copy of the input pipe, so the compressor sees end-of-input when the producer exits. */
  detachInput(): void
  /** Resolves when the compressor exited (never rejects). */
  readonly exited: Promise<ExitStatus>
  /** The compressor's failure in its own words, or undefined when it exited 0. */
  failure(status: ExitStatus): Error | undefined
  /** Kills the compressor if it is still running and waits for it to exit. */
  terminate(): Promise<void>
}

export interface ProgramSpec {
  program: string
  /** The Debian package that installs it, where its name is not the program's. */
  package?: string
  args(level: number, threads: number): string[]
}

/**
 * zstd: `--check` writes the frame's content checksum (the in-stream decoder verifies it); one
 * worker per thread still writes ONE frame. pigz: one standard gzip member (pigz cuts the input
 * into blocks it deflates in parallel and joins them into a single deflate stream, with one
 * header and one CRC-32/length trailer), which gunzip and Node's zlib read.
 */
const PROGRAMS: Record<CodecName, ProgramSpec> = {
  zstd: {program: 'zstd', args: (level, threads) => ['-q', '-c', `-${level}`, `-T${threads}`, '--check', '--no-progress']},
  gzip: {program: 'pigz', args: (level, threads) => ['-c', `-${level}`, '-p', String(threads), '-n']},
}

/**
 * ISA-L's igzip (Debian's `isal` package) for gzip at level 1, the default: one standard gzip
 * member like pigz's, from a deflate encoder made for speed. On the benchmark's dump (108 MB of SQL)
 * its level 1 took 0.15 CPU-s where `pigz -1` took 0.64, on one thread against two, and wrote a
 * slightly smaller file (25.7 against 25.9 MB; BENCHMARKS.md, "Session 23"). Its levels are its own
 * (0–3, not zlib's 1–9), so only level 1 maps to it; other levels keep pigz. `-n`: no name or time
 * in the header, as pigz's `-n`, so the same dump compresses to the same bytes.
 */
const IGZIP: ProgramSpec = {program: 'igzip', package: 'isal', args: (level) => ['-c', `-${level}`, '-n']}
const IGZIP_LEVEL = 1
/** How igzip decodes a stream to stdout: its probe below, and the in-stream check (src/compress/gzip-check.ts). */
export const IGZIP_DECODE_ARGS = ['-d', '-c']

/**
 * The compressor program a backup in `codec` at `level` goes through, or undefined when there is
 * none (gzip without igzip or pigz on PATH: dbb's in-process parallel gzip then compresses,
 * src/compress/parallel-gzip.ts). zstd always has one: requireCodec fails the backup first when
 * the zstd program is missing.
 */
export function programFor(codec: CodecName, level: number): ProgramSpec | undefined {
  if (codec === 'zstd') return PROGRAMS.zstd
  if (level === IGZIP_LEVEL && igzipUsable()) return IGZIP
  return onPath(PROGRAMS.gzip.program) ? PROGRAMS.gzip : undefined
}

/**
 * igzip for one file compressed or decoded whole (a WAL segment: src/compress/codec-streams.ts,
 * createFileCompressor and createFileDecompressor), or undefined where it is not on PATH or fails
 * its probe. No pigz here: such a file is compressed on one thread (the parallelism is across
 * segments), where pigz does what Node's zlib does, plus a process. `level` undefined: decoding,
 * which reads a gzip stream of any level.
 */
export function igzipForFile(level?: number): ProgramSpec | undefined {
  if (level !== undefined && level !== IGZIP_LEVEL) return undefined
  return igzipUsable() ? IGZIP : undefined
}

function igzipUsable(): boolean {
  return onPath(IGZIP.program) && igzipWorks()
}

/** What the igzip probe compresses: a line of SQL, repeated so that deflate has matches to find. */
const IGZIP_PROBE_INPUT = Buffer.from('INSERT INTO dbb_probe VALUES (1, \'igzip\');\n'.repeat(64))
const igzipProbed = new Set<string>()

/**
 * Whether the igzip on PATH compresses, as dbb runs it, into a gzip that zlib decodes to the same
 * bytes, and decodes that gzip itself (its in-stream check): two runs on 2.8 KB, once per PATH
 * while the answer is yes. igzip is an accelerator, so an igzip that is broken (its library
 * missing: exit 127) or is another program of that name must never fail a backup: gzip then goes
 * through pigz or dbb's own gzip, as without igzip. A failed probe is not kept (it is asked again
 * by the next backup), so an igzip mended under a running `dbb serve` is used again.
 */
function igzipWorks(): boolean {
  const key = process.env.PATH ?? ''
  if (igzipProbed.has(key)) return true
  const compressed = runFilterSync(IGZIP.program, IGZIP.args(IGZIP_LEVEL, 1), IGZIP_PROBE_INPUT)
  if (compressed.status !== 0) return false
  try {
    if (!gunzipSync(compressed.stdout).equals(IGZIP_PROBE_INPUT)) return false
  } catch {
    return false
  }

  const decoded = runFilterSync(IGZIP.program, IGZIP_DECODE_ARGS, compressed.stdout)
  if (decoded.status !== 0 || !decoded.stdout.equals(IGZIP_PROBE_INPUT)) return false
  igzipProbed.add(key)
  return true
}

/** True when an executable `name` is in one of PATH's directories (no process started). */
export function onPath(name: string, searchPath = process.env.PATH ?? ''): boolean {
  return searchPath
    .split(path.delimiter)
    .filter(Boolean)
    .some((directory) => {
      try {
        accessSync(path.join(directory, name), constants.X_OK)
        return true
      } catch {
        return false
      }
    })
}

export function startProgramCompressor(spec: ProgramSpec, options: {level: number; threads?: number}): ProgramCompressor {
  const child = spawnFilter(spec.program, spec.args(options.level, options.threads ?? defaultCompressionThreads()))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4096)))
  // EPIPE on dbb's copy of the input cannot happen (dbb never writes to it); errors there are not the backup's.
  child.stdin.on('error', () => {})
  const exited = childExit(child).then(({code, signal, spawnError}): ExitStatus => {
    if (spawnError) stderr = spawnError.code === 'ENOENT' ? `the ${spec.program} program is not on PATH (install it, e.g. apt-get install ${spec.package ?? spec.program})` : spawnError.message
    return {code, signal}
  })
  return {
    input: child.stdin,
    output: child.stdout,
    detachInput: () => child.stdin.destroy(),
    exited,
    failure(status) {
      if (status.code === 0) return undefined
      const how = status.signal ? `killed by ${status.signal}` : status.code === null ? 'did not start' : `exit code ${status.code}`
      const said = stderr.trim().split('\n').slice(-2).join(' | ')
      return new OperationError(`${spec.program} failed while compressing (${how})${said ? `: ${said}` : ''}`)
    },
    async terminate() {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL')
      child.stdin.destroy()
      // Output nobody will read: drop it, so the child's pipes close and 'close' fires.
      child.stdout.destroy()
      await exited
    },
  }
}
