import {ChildProcess, ChildProcessByStdio, execFile, spawn, spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import {Readable, Writable} from 'node:stream'
import {promisify} from 'node:util'

import {OperationError} from '../errors'

const STDERR_LIMIT = 16 * 1024

/**
 * THE one place dbb starts other programs (pg_dump, psql, pg_basebackup, pg_receivewal, tar and
 * the `--version` probes); a unit test fails when any other module imports node:child_process.
 *
 * A child never inherits dbb's environment, which holds DB_PASSWORD, API_TOKEN, cloud keys,
 * Slack tokens and any plugin's secrets. It gets BASE_VARIABLES (where programs are, locale,
 * time zone, home and temp directories) from dbb's environment, plus what the caller passes, and
 * the caller may pass only libpq (`PG…`) and locale variables — the password only to programs
 * that connect (see libpqEnvironment). Anything else is a programming error and throws.
 */
const BASE_VARIABLES = ['PATH', 'HOME', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR']
const LOCALE_VARIABLE = /^LC_[A-Z]+$/
const PASSABLE_VARIABLE = /^(PG[A-Z_]+|LC_[A-Z]+|PATH|HOME|LANG|LANGUAGE|TZ|TMPDIR)$/

/** Variables a caller hands a child on top of the base ones: libpq settings and locale only. */
export type ToolEnvironment = Readonly<Record<string, string | undefined>>

/** The environment a child really gets: base variables from `source`, then `extra` (checked). */
export function childEnvironment(extra: ToolEnvironment = {}, source: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(source)) {
    if (value !== undefined && (BASE_VARIABLES.includes(name) || LOCALE_VARIABLE.test(name))) env[name] = value
  }

  for (const [name, value] of Object.entries(extra)) {
    if (!PASSABLE_VARIABLE.test(name)) throw new Error(`refusing to pass ${name} to a child process: only libpq (PG…) and locale variables are passed`)
    if (value !== undefined) env[name] = value
  }

  return env
}

/**
 * Programs that connect (their environment names a PGHOST) run with `--no-password`: a missing
 * or wrong password fails at once instead of pg_dump prompting on /dev/tty and hanging.
 */
function nonInteractive(args: readonly string[], extra: ToolEnvironment): string[] {
  if (extra.PGHOST === undefined || args.includes('--no-password') || args.includes('-w')) return [...args]
  return ['--no-password', ...args]
}

export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface SpawnedTool {
  /** `child.stdout` is null when the program writes straight into another program (spawnTool's `output`). */
  child: ChildProcessByStdio<null, Readable | null, Readable>
  /** What the backup reads instead of the child's stdout, when a wrapper taps it (src/backup/custom-format.ts). */
  output?: Readable
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<ExitStatus>
  /** The last 16 KiB the program wrote to stderr. */
  stderr(): string
}

/**
 * Starts a PostgreSQL client program with its output as a stream. The abort signal kills it.
 * Arguments never carry secrets: connection settings go in `env` (see libpqEnvironment).
 * With `output` (another child's stdin pipe), the program writes there directly and dbb never
 * sees its output (src/compress/program-compressor.ts).
 */
export function spawnTool(command: string, args: string[], env: ToolEnvironment, signal?: AbortSignal, output?: Writable): SpawnedTool {
  const child = spawn(command, nonInteractive(args, env), {env: childEnvironment(env), stdio: ['ignore', output ?? 'pipe', 'pipe'], signal, killSignal: 'SIGTERM'}) as ChildProcessByStdio<
    null,
    Readable | null,
    Readable
  >
  return {child, ...watchTool(command, child, child.stderr)}
}

export interface FedTool {
  child: ChildProcessByStdio<Writable, null, Readable>
  exited: Promise<ExitStatus>
  stderr(): string
}

/**
 * Like spawnTool, for a program that reads its input from stdin (psql); its stdout is discarded.
 * `processGroup`: the child leads a process group of its own, so the caller can kill it together
 * with the workers it forks (`pg_restore --jobs`), which would otherwise outlive it.
 */
export function spawnToolWithInput(command: string, args: string[], env: ToolEnvironment, signal?: AbortSignal, {processGroup = false} = {}): FedTool {
  const child = spawn(command, nonInteractive(args, env), {env: childEnvironment(env), stdio: ['pipe', 'ignore', 'pipe'], signal, killSignal: 'SIGTERM', detached: processGroup})
  return {child, ...watchTool(command, child, child.stderr)}
}

function watchTool(command: string, child: ChildProcess, stderrStream: Readable): Pick<SpawnedTool, 'exited' | 'stderr'> {
  let stderr = ''
  stderrStream.setEncoding('utf8')
  stderrStream.on('data', (text: string) => {
    stderr = (stderr + text).slice(-STDERR_LIMIT)
  })
  const exited = new Promise<ExitStatus>((resolve) => {
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') stderr = `${command} not found on PATH (install the PostgreSQL client tools)`
      else if (error.name !== 'AbortError') stderr ||= error.message
    })
    child.on('close', (code, exitSignal) => resolve({code, signal: exitSignal}))
  })
  return {exited, stderr: () => stderr}
}

/** `pg_dump failed (exit code 1): pg_dump: error: …`, in the program's own words. */
export function toolFailure(command: string, status: ExitStatus, stderr: string): OperationError {
  const how = status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
  // The cause is on the tool's "error:" line; the lines after it are hints and the failed query,
  // so a plain "last 3 lines" would drop the cause when the server goes away mid-dump.
  const errorLine = lines.find((line) => /\b(error|fatal):/i.test(line))
  const tail = lines.slice(-3)
  const picked = errorLine === undefined || tail.includes(errorLine) ? tail : [errorLine, ...tail.slice(-2)]
  const detail = picked.length > 0 ? `: ${picked.join(' | ')}` : ''
  return new OperationError(`${command} failed (${how})${detail}`)
}

/** `pg_dump (PostgreSQL) 15.18 (Debian …)` → `15.18`. */
export async function toolVersion(command: string): Promise<string> {
  try {
    const {stdout} = await runTool(command, ['--version'], {}, {timeout: 10_000})
    return /(\d+(?:\.\d+)+)/.exec(stdout)?.[1] ?? stdout.trim()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new OperationError(`${command} not found on PATH (install the PostgreSQL client tools, e.g. apt-get install postgresql-client)`)
    }

    throw new OperationError(`${command} --version failed: ${(error as Error).message}`)
  }
}

/**
 * Runs a short program to completion (`--version`, `pg_receivewal --create-slot`) with the same
 * environment rule as spawnTool. Rejects like execFile: the error carries `code` and `stderr`.
 */
export async function runTool(
  command: string,
  args: string[],
  env: ToolEnvironment,
  options: {timeout?: number} = {},
): Promise<{stdout: string; stderr: string}> {
  const run = promisify(execFile)(command, nonInteractive(args, env), {env: childEnvironment(env), timeout: options.timeout, encoding: 'utf8'})
  // Nothing is fed on stdin: a program that reads it (age with a bad argument) must see its end, not wait.
  run.child.stdin?.end()
  return run
}

/**
 * A PostgreSQL server program run to completion as another OS user (pg_ctl of a drill's private
 * server, src/drill/private-server.ts). The exception to the environment rule: `env` is given
 * whole, because the server pg_ctl starts runs restore_command (`dbb wal fetch`), which needs the
 * storage settings; the caller builds it from childEnvironment() plus the storage's own variables
 * (src/drill/physical.ts), never from dbb's whole environment.
 */
export async function runServerProgram(
  command: string,
  args: string[],
  options: {env: NodeJS.ProcessEnv; cwd: string; uid?: number; gid?: number},
): Promise<{stdout: string; stderr: string}> {
  return promisify(execFile)(command, args, {...options, encoding: 'utf8'})
}

export interface ChildOptions {
  /** libpq and locale variables for the child (see childEnvironment); none by default. */
  env?: ToolEnvironment
  signal?: AbortSignal
}

/**
 * A program fed on stdin with stderr captured and stdout discarded (tar), for callers that watch
 * the child themselves; the environment rule is the same as spawnTool's.
 */
export function spawnChild(
  command: string,
  args: string[],
  options: ChildOptions & {stdio: ['pipe', 'ignore', 'pipe']},
): ChildProcessByStdio<Writable, null, Readable> {
  const extra = options.env ?? {}
  return spawn(command, nonInteractive(args, extra), {env: childEnvironment(extra), stdio: options.stdio, signal: options.signal})
}

/**
 * A filter program (the `zstd` compressor/decompressor): stdin and stdout are the data, stderr is
 * captured. It gets only the base environment: it needs no secret and no connection setting.
 */
export function spawnFilter(command: string, args: string[]): ChildProcessByStdio<Writable, Readable, Readable> {
  return spawn(command, args, {env: childEnvironment(), stdio: ['pipe', 'pipe', 'pipe']})
}

/**
 * A filter program that reads a file itself: its stdin is the open file `fd`, so dbb never copies
 * the file's bytes (igzip compressing a WAL segment, src/compress/file-programs.ts); its stdout is
 * the data and its stderr is captured. The base environment only, as spawnFilter.
 */
export function spawnFilterFromFile(command: string, args: string[], fd: number): ChildProcessByStdio<null, Readable, Readable> {
  // @types/node types spawn() by stdio only for stream and keyword entries, not a descriptor number.
  return spawn(command, args, {env: childEnvironment(), stdio: [fd, 'pipe', 'pipe']}) as ChildProcessByStdio<null, Readable, Readable>
}

/** A filter program that writes a file itself: its stdout is the open file `fd` (igzip decoding a WAL segment); stdin is the data. */
export function spawnFilterIntoFile(command: string, args: string[], fd: number): ChildProcessByStdio<Writable, null, Readable> {
  return spawn(command, args, {env: childEnvironment(), stdio: ['pipe', fd, 'pipe']}) as ChildProcessByStdio<Writable, null, Readable>
}

/**
 * runFilter, synchronously (the zstd probe where nothing probed zstd before the check,
 * src/compress/zstd-probe.ts): its exit status and stderr.
 */
export function runFilterSync(command: string, args: string[], input: Buffer): {status: number | null; stdout: Buffer; stderr: string} {
  const {status, stdout, stderr} = spawnSync(command, args, {env: childEnvironment(), input, timeout: 10_000, maxBuffer: 1024 * 1024})
  return {status, stdout: stdout ?? Buffer.alloc(0), stderr: stderr?.toString('utf8') ?? ''}
}

/**
 * A filter run once on a few bytes (the zstd probe, src/compress/zstd-probe.ts): its exit and
 * stderr; `spawnError` when it never started. The base environment only, as spawnFilter; killed
 * after 10 s, as the `--version` probes are.
 */
export async function runFilter(command: string, args: string[], input: Buffer): Promise<ChildExit & {stderr: string}> {
  const child = spawn(command, args, {env: childEnvironment(), stdio: ['pipe', 'ignore', 'pipe'], timeout: 10_000})
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-STDERR_LIMIT)))
  // EPIPE when the program exits without reading (or never started): its exit says why.
  child.stdin.on('error', () => {})
  child.stdin.end(input)
  return {...(await childExit(child)), stderr}
}

/**
 * A program whose stdin is another child's output pipe (`zstd -d | wc -c`, src/compress/gzip-check.ts):
 * it writes to dbb, and its stderr is dropped. Hand `input` over, then close dbb's copy of it.
 */
export function spawnReader(command: string, args: string[], input: Readable): ChildProcessByStdio<null, Readable, null> {
  return spawn(command, args, {env: childEnvironment(), stdio: [input, 'pipe', 'ignore']})
}

/** How a child ended; `spawnError` when it never started (not on PATH). */
export type ChildExit = ExitStatus & {spawnError?: NodeJS.ErrnoException}

/** Resolves when `child` has exited and its pipes are closed (never rejects). */
export function childExit(child: ChildProcess): Promise<ChildExit> {
  return new Promise((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (child.pid === undefined) resolve({code: null, signal: null, spawnError: error})
    })
    child.once('close', (code, signal) => resolve({code, signal}))
  })
}

/**
 * Starts dbb itself (`node <cliEntry> args…`), detached, as the WAL spool uploader and the fetch
 * prefetcher are, its stdout and stderr appended to `logFile` (openDetachedLog). The one child
 * that gets dbb's whole environment: it is dbb, and it needs the same settings (storage
 * credentials included) as the process that starts it; its log is scrubbed of them as every dbb
 * log is (src/logger.ts).
 */
export function spawnDetachedDbb(cliEntry: string, args: string[], logFile: string): void {
  const log = openDetachedLog(logFile)
  try {
    const child = spawn(process.execPath, [cliEntry, ...args], {detached: true, stdio: ['ignore', log ?? 'ignore', log ?? 'ignore'], env: process.env})
    child.unref()
  } finally {
    if (log !== undefined) fs.closeSync(log)
  }
}

/** When a background process's log (WAL_SPOOL_DIR/uploader.log, prefetch.log) is set aside as `<log>.1` at the next start. */
export const DETACHED_LOG_MAX_BYTES = 10 * 1024 * 1024

/**
 * The log of a detached dbb, opened for appending (mode 0600, its directory made 0700 when
 * missing, as the spool's own directories are). No terminal and no PostgreSQL log reads a
 * background process, so its warnings would otherwise reach nobody. A standby's uploader and
 * prefetcher start again every time they were idle for 10 s, for weeks: once the file passes
 * DETACHED_LOG_MAX_BYTES, the start renames it to `<log>.1` (replacing the one before), so the two
 * together stay within twice that. Undefined when it cannot be opened: a log is never a reason for
 * the process not to start (it then writes nowhere, as before the logs existed).
 */
function openDetachedLog(logFile: string): number | undefined {
  try {
    fs.mkdirSync(path.dirname(logFile), {recursive: true, mode: 0o700})
    const size = fs.statSync(logFile, {throwIfNoEntry: false})?.size ?? 0
    if (size >= DETACHED_LOG_MAX_BYTES) fs.renameSync(logFile, `${logFile}.1`)
    return fs.openSync(logFile, 'a', 0o600)
  } catch {
    return undefined
  }
}
