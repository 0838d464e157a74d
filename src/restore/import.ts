import {once} from 'node:events'
import {pipeline} from 'node:stream/promises'

import {ExitStatus, spawnToolWithInput, toolFailure} from '../backup/child-process'
import {hashTap} from '../backup/hash-tap'
import type {BackupMetadata} from '../backup/metadata'
import {isDamagedStreamError} from '../compress/codec-streams'
import {codecOf} from '../compress/codecs'
import {createObjectDecoder} from '../encrypt/age'
import {AbortedError, OperationError, errorMessage} from '../errors'
import type {StorageBackend} from '../storage/contract'

/**
 * psql reads the dump from stdin and stops at the first error (ON_ERROR_STOP → exit 3). There is
 * no wrapping transaction: the import goes into a staging database nobody uses, so atomicity comes
 * from the swap, not from one transaction (which large objects' own BEGIN/COMMIT would break, and
 * which thousands of tables would exhaust the lock table with). No password or host in the
 * arguments: connection settings come from the environment (libpqEnvironment), and --no-password
 * makes a missing password fail instead of waiting for a prompt. `--file=-` (rather than plain
 * stdin) makes psql prefix errors with their line: `psql:<stdin>:1234: ERROR: …`.
 */
export const PSQL_ARGS = ['-X', '--no-password', '-v', 'ON_ERROR_STOP=1', '-q', '--file=-']

export interface ImportProgress {
  /** Compressed bytes read from storage so far. */
  readBytes: number
  /** SQL bytes handed to psql so far. */
  restoredBytes: number
}

export interface ImportOptions {
  storage: StorageBackend
  backup: BackupMetadata
  /** libpq environment pointing at the (staging) database to import into. */
  env: NodeJS.ProcessEnv
  signal?: AbortSignal
  onProgress?: (progress: ImportProgress) => void
  /** AGE_IDENTITY_FILE, proven to open the backup (prepareDecryption); needed when its id ends in .age. */
  identityFile?: string
}

export interface ImportResult extends ImportProgress {
  /** sha256 and size of the bytes read from storage: equal to the sidecar's, or importDump throws. */
  sha256: string
  sizeBytes: number
  /** PostgreSQL's WARNING lines (with their DETAIL/HINT), for the log. */
  warnings: string[]
}

/** A read from the storage stream failed: raised by the stage that iterates the source, so the side that failed is known by construction. */
export class StorageReadError extends OperationError {}

/**
 * Streams the stored dump → sha256/size tap → decompressor (the sidecar's codec) → psql's stdin, in one pass (no temporary
 * file, no second read).
 *
 * The end of psql's input is held back until the whole object was read and its size and sha256
 * match the sidecar. On any failure of the feeding side — a storage read error, a mismatch, a gzip
 * error, Ctrl-C — psql is killed with SIGKILL *before* its stdin closes, so a failure never
 * reaches psql as a clean end of input. Whether psql "has gone" is decided from psql itself (its
 * exit status), never from an error code seen while writing to it.
 */
export async function importDump(options: ImportOptions): Promise<ImportResult> {
  const {backup} = options
  if (options.signal?.aborted) throw new AbortedError('restore interrupted')
  const psql = spawnToolWithInput('psql', PSQL_ARGS, options.env)
  let psqlExit: ExitStatus | undefined
  void psql.exited.then((status) => {
    psqlExit = status
  })
  const stdin = psql.child.stdin
  stdin.on('error', () => {}) // EPIPE once psql stops on an SQL error: its exit status says what happened

  const progress: ImportProgress = {readBytes: 0, restoredBytes: 0}
  const tap = hashTap((bytes) => (progress.readBytes = bytes))

  async function* readStorage(source: AsyncIterable<Buffer>) {
    try {
      for await (const chunk of source) yield chunk
    } catch (error) {
      throw storageReadFailure(error, backup.id, progress.readBytes)
    }
  }

  async function* verifyAtEnd(source: AsyncIterable<Buffer>) {
    yield* tap.stage(source)
    const sha256 = tap.sha256()
    if (tap.sizeBytes !== backup.sizeBytes || sha256 !== backup.sha256) {
      throw new OperationError(
        `integrity check failed for ${backup.id}: read ${tap.sizeBytes} bytes with sha256 ${sha256}, its metadata says ` +
          `${backup.sizeBytes} bytes with sha256 ${backup.sha256}; the stored dump is damaged or was altered`,
      )
    }
  }

  async function feedPsql(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      if (psqlExit) return // psql stopped by itself; its exit status is examined below
      progress.restoredBytes += chunk.length
      options.onProgress?.(progress)
      if (!stdin.write(chunk)) await Promise.race([once(stdin, 'drain'), psql.exited]).catch(() => {})
    }
  }

  try {
    // The source is iterated inside readStorage (not handed to pipeline as a stream), so its errors surface there and nowhere else.
    const source = await options.storage.get(backup.id, {signal: options.signal})
    // A generator awaiting a stalled source cannot be returned from: end the source itself on
    // Ctrl-C and when psql stops, or the pipeline would wait for storage forever.
    const stopReading = () => source.destroy(new AbortedError('restore interrupted'))
    options.signal?.addEventListener('abort', stopReading, {once: true})
    void psql.exited.then(() => {
      if (!source.readableEnded) source.destroy()
    })
    try {
      await pipeline(readStorage(source), verifyAtEnd, createObjectDecoder(backup.id, codecOf(backup), options.identityFile), feedPsql, {signal: options.signal})
    } finally {
      options.signal?.removeEventListener('abort', stopReading)
    }
  } catch (error) {
    // Kill first: psql must never see the end of its input after a failure on our side.
    psql.child.kill('SIGKILL')
    stdin.destroy()
    const status = await psql.exited
    // psql exited by itself (an SQL error, a lost server connection): that is the cause, whatever our write then saw.
    if (status.signal === null && status.code !== 0) throw psqlFailure(status, psql.stderr())
    if (status.signal === null) throw new OperationError(`psql stopped before the end of ${backup.id} (the dump ends its session early?)`)
    throw feedFailure(error, backup.id, progress.readBytes)
  }

  if (psqlExit && !(psqlExit.code === 0 && progress.readBytes === backup.sizeBytes)) {
    throw psqlExit.code === 0 ? new OperationError(`psql stopped before the end of ${backup.id} (the dump ends its session early?)`) : psqlFailure(psqlExit, psql.stderr())
  }

  stdin.end()
  const status = await psql.exited
  if (status.code !== 0) throw psqlFailure(status, psql.stderr())
  return {...progress, sha256: tap.sha256(), sizeBytes: tap.sizeBytes, warnings: serverMessages(psql.stderr(), 'WARNING')}
}

const SERVER_LINE = /^(?:psql:[^:]*:\d+: )?(ERROR|FATAL|PANIC|WARNING|NOTICE|DETAIL|HINT|CONTEXT|LINE \d+|QUERY|STATEMENT):/
const FOLLOW_UP = /^(?:DETAIL|HINT|CONTEXT|QUERY|STATEMENT|LINE \d+):|^\s/

/**
 * Each message of the given severity with the lines PostgreSQL attached to it (DETAIL, HINT,
 * CONTEXT, …): `psql:<stdin>:12: ERROR:  out of shared memory | HINT:  You might need to increase …`.
 */
export function serverMessages(stderr: string, severity: 'ERROR' | 'WARNING'): string[] {
  const lines = stderr.split('\n')
  const messages: string[] = []
  for (let index = 0; index < lines.length; index++) {
    const match = SERVER_LINE.exec(lines[index])
    const isHead = match?.[1] === severity || (severity === 'ERROR' && (match?.[1] === 'FATAL' || match?.[1] === 'PANIC'))
    if (!isHead) continue
    const parts = [lines[index].trim()]
    while (index + 1 < lines.length && lines[index + 1] !== '' && FOLLOW_UP.test(lines[index + 1])) {
      index++
      // The caret line under `LINE n:` only makes sense in a fixed-width block; drop it.
      if (/^\s*\^\s*$/.test(lines[index])) continue
      parts.push(lines[index].trim())
    }

    messages.push(parts.join('\n'))
  }

  return messages
}

/** psql's own error with PostgreSQL's DETAIL/HINT/CONTEXT lines, and the warnings before it; else its last lines. */
export function psqlFailure(status: ExitStatus, stderr: string): OperationError {
  const errors = serverMessages(stderr, 'ERROR')
  if (errors.length === 0) {
    const clientError = stderr.split('\n').find((line) => /\berror:/.test(line))
    return clientError ? new OperationError(clientError.trim()) : toolFailure('psql', status, stderr)
  }

  const warnings = serverMessages(stderr, 'WARNING').slice(-3)
  return new OperationError([...warnings, errors.at(-1)!].join('\n'))
}

function storageReadFailure(error: unknown, id: string, bytes: number): Error {
  if (error instanceof AbortedError || (error as {name?: string}).name === 'AbortError') return error as Error
  const code = (error as {code?: string}).code ?? ''
  const message = errorMessage(error)
  // Node reports a cut HTTP response as "aborted" (ECONNRESET), the s3 backend as STORAGE_CONNECTION_LOST: say what it means.
  const connectionLost = ['STORAGE_CONNECTION_LOST', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE'].includes(code) || /^(aborted|socket hang up|premature close)$/i.test(message)
  const what = connectionLost ? `the connection to storage was lost after ${bytes} bytes reading ${id}` : `reading ${id} from storage failed after ${bytes} bytes`
  return new StorageReadError(`${what}: ${message}${code && !message.includes(code) ? ` (${code})` : ''}`, {cause: error})
}

function feedFailure(error: unknown, id: string, bytes: number): Error {
  if (error instanceof AbortedError || (error as {name?: string}).name === 'AbortError') return new AbortedError('restore interrupted')
  if (isDamagedStreamError(error)) return new OperationError(`integrity check failed for ${id}: not a valid ${id.endsWith('.age') ? 'encrypted' : 'compressed'} stream after ${bytes} bytes (${errorMessage(error)}); the stored dump is damaged or was altered`)
  if (error instanceof OperationError) return error
  return new OperationError(`restoring ${id} failed: ${errorMessage(error)}`, {cause: error})
}
