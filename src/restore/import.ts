import {createHash} from 'node:crypto'
import {once} from 'node:events'
import {pipeline} from 'node:stream/promises'
import {createGunzip} from 'node:zlib'

import {ExitStatus, spawnToolWithInput, toolFailure} from '../backup/child-process'
import type {BackupMetadata} from '../backup/metadata'
import {AbortedError, OperationError, errorMessage} from '../errors'
import type {StorageBackend} from '../storage/contract'

/**
 * psql reads the dump from stdin in one transaction and stops at the first error. No password or
 * host in the arguments: connection settings come from the environment (libpqEnvironment), and
 * --no-password makes a missing password fail instead of waiting for a prompt. `--file=-` (rather
 * than plain stdin) makes psql prefix errors with their line: `psql:<stdin>:1234: ERROR: …`.
 */
export const PSQL_ARGS = ['-X', '--no-password', '--single-transaction', '-v', 'ON_ERROR_STOP=1', '-q', '--file=-']

export interface ImportProgress {
  /** Compressed bytes read from storage so far. */
  readBytes: number
  /** SQL bytes handed to psql so far. */
  restoredBytes: number
}

export interface ImportOptions {
  storage: StorageBackend
  backup: BackupMetadata
  /** libpq environment pointing at the target database. */
  env: NodeJS.ProcessEnv
  signal?: AbortSignal
  onProgress?: (progress: ImportProgress) => void
}

/** psql went away while we were still feeding it; its exit status and stderr say why. */
class PsqlStopped extends Error {}

/**
 * Streams the stored dump → sha256/size tap → gunzip → psql's stdin, with no temporary file.
 *
 * psql commits its single transaction when its input ends cleanly, so end-of-input is the commit
 * decision and is held back until it is safe: only after the whole object was read and its sha256
 * again matches the sidecar (the object could have been replaced since the verifying pass) is
 * stdin closed. On any failure — a mismatch, a storage or gzip error, Ctrl-C — psql is killed
 * with SIGKILL *before* its stdin closes, so it never sees EOF and the server rolls back.
 */
export async function importDump(options: ImportOptions): Promise<ImportProgress> {
  const {backup} = options
  if (options.signal?.aborted) throw new AbortedError('restore interrupted')
  const psql = spawnToolWithInput('psql', PSQL_ARGS, options.env)
  let psqlExit: ExitStatus | undefined
  void psql.exited.then((status) => {
    psqlExit = status
  })
  const stdin = psql.child.stdin
  stdin.on('error', () => {}) // EPIPE once psql stops on an SQL error: reported from its exit status instead

  const progress: ImportProgress = {readBytes: 0, restoredBytes: 0}
  const hash = createHash('sha256')
  async function* verifyAtEnd(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      hash.update(chunk)
      progress.readBytes += chunk.length
      yield chunk
    }

    const sha256 = hash.digest('hex')
    if (progress.readBytes !== backup.sizeBytes || sha256 !== backup.sha256) {
      throw new OperationError(
        `${backup.id} changed in storage during the restore: read ${progress.readBytes} bytes with sha256 ${sha256}, ` +
          `its metadata says ${backup.sizeBytes} bytes with sha256 ${backup.sha256}`,
      )
    }
  }

  async function feedPsql(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      if (psqlExit) throw new PsqlStopped()
      progress.restoredBytes += chunk.length
      options.onProgress?.(progress)
      if (!stdin.write(chunk)) {
        await Promise.race([once(stdin, 'drain'), psql.exited]).catch(() => {})
      }
    }

    if (psqlExit) throw new PsqlStopped()
  }

  let killed = false
  try {
    const source = await options.storage.get(backup.id, {signal: options.signal})
    await pipeline(source, verifyAtEnd, createGunzip(), feedPsql, {signal: options.signal})
  } catch (error) {
    const psqlGone = error instanceof PsqlStopped || isBrokenPipe(error)
    if (!psqlGone) {
      killed = true
      psql.child.kill('SIGKILL')
    }

    stdin.destroy()
    const status = await psql.exited
    if (!killed && status.code !== 0) throw psqlFailure(status, psql.stderr())
    throw feedFailure(error, backup.id)
  }

  stdin.end()
  const status = await psql.exited
  if (status.code !== 0) throw psqlFailure(status, psql.stderr())
  return progress
}

/** psql's own error line (`psql:<stdin>:1234: ERROR:  relation "x" does not exist`), else its last lines. */
export function psqlFailure(status: ExitStatus, stderr: string): OperationError {
  const errorLine = stderr.split('\n').find((line) => /\b(ERROR|FATAL|PANIC|error):/.test(line))
  if (errorLine) return new OperationError(errorLine.trim())
  return toolFailure('psql', status, stderr)
}

function feedFailure(error: unknown, id: string): Error {
  if (error instanceof AbortedError || (error as {name?: string}).name === 'AbortError') return new AbortedError('restore interrupted')
  const code = (error as {code?: string}).code
  if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR') return new OperationError(`${id} is not a valid gzip stream: ${errorMessage(error)}`)
  if (error instanceof OperationError) return error
  return new OperationError(`reading ${id} from storage failed: ${errorMessage(error)}`, {cause: error})
}

function isBrokenPipe(error: unknown): boolean {
  const code = (error as {code?: string}).code
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || code === 'ECONNRESET'
}
