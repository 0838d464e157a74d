import {ChildProcess, ChildProcessByStdio, execFile, spawn} from 'node:child_process'
import {Readable, Writable} from 'node:stream'
import {promisify} from 'node:util'

import {OperationError} from '../errors'

const STDERR_LIMIT = 16 * 1024

export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface SpawnedTool {
  child: ChildProcessByStdio<null, Readable, Readable>
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<ExitStatus>
  /** The last 16 KiB the program wrote to stderr. */
  stderr(): string
}

/**
 * Starts a PostgreSQL client program with its output as a stream. The abort signal kills it.
 * Arguments never carry secrets: connection settings go in `env` (see libpqEnvironment).
 */
export function spawnTool(command: string, args: string[], env: NodeJS.ProcessEnv, signal?: AbortSignal): SpawnedTool {
  const child = spawn(command, args, {env, stdio: ['ignore', 'pipe', 'pipe'], signal, killSignal: 'SIGTERM'})
  return {child, ...watchTool(command, child, child.stderr)}
}

export interface FedTool {
  child: ChildProcessByStdio<Writable, null, Readable>
  exited: Promise<ExitStatus>
  stderr(): string
}

/** Like spawnTool, for a program that reads its input from stdin (psql); its stdout is discarded. */
export function spawnToolWithInput(command: string, args: string[], env: NodeJS.ProcessEnv, signal?: AbortSignal): FedTool {
  const child = spawn(command, args, {env, stdio: ['pipe', 'ignore', 'pipe'], signal, killSignal: 'SIGTERM'})
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
    const {stdout} = await promisify(execFile)(command, ['--version'], {timeout: 10_000})
    return /(\d+(?:\.\d+)+)/.exec(stdout)?.[1] ?? stdout.trim()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new OperationError(`${command} not found on PATH (install the PostgreSQL client tools, e.g. apt-get install postgresql-client)`)
    }

    throw new OperationError(`${command} --version failed: ${(error as Error).message}`)
  }
}
