import {once} from 'node:events'
import {createWriteStream} from 'node:fs'
import {rm} from 'node:fs/promises'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'

import {ExitStatus, spawnFilter, spawnToolWithInput, toolFailure} from '../backup/child-process'
import {hashTap} from '../backup/hash-tap'
import type {BackupMetadata} from '../backup/metadata'
import {isDamagedStreamError} from '../compress/codec-streams'
import {codecOf} from '../compress/codecs'
import {createObjectDecoder} from '../encrypt/age'
import {AbortedError, OperationError, errorMessage} from '../errors'
import {keepTouched} from '../leftover-owner'
import type {StorageBackend} from '../storage/contract'
import {ArchiveListing, ArchiveRestoreOptions, makeRestoreTempDir, parseArchiveList, pgRestoreArgs, sweepDeadRestoreDirs} from './archive'

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
  /** Custom-format archives only: pg_restore's --jobs/--table/--schema (src/restore/archive.ts). */
  archive?: ArchiveRestoreOptions
  /** Told what a parallel restore writes to local disk (its temporary file), before it does. */
  onNotice?: (message: string) => void
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
  if (backup.format === 'custom' && (options.archive?.jobs ?? 1) > 1) return importArchiveFromFile(options)
  // A custom-format archive streams into pg_restore's stdin exactly as a plain dump into psql's (serial, no temporary file).
  const importer =
    backup.format === 'custom' ? {command: 'pg_restore', args: pgRestoreArgs(backup, options.env.PGDATABASE ?? '', options.archive)} : {command: 'psql', args: PSQL_ARGS}
  const psql = spawnToolWithInput(importer.command, importer.args, options.env)
  let psqlExit: ExitStatus | undefined
  void psql.exited.then((status) => {
    psqlExit = status
  })
  const stdin = psql.child.stdin
  stdin.on('error', () => {}) // EPIPE once psql stops on an SQL error: its exit status says what happened

  const progress: ImportProgress = {readBytes: 0, restoredBytes: 0}
  const tap = hashTap((bytes) => (progress.readBytes = bytes))
  const readStorage = readStorageStage(backup, progress)
  const verifyAtEnd = verifyAtEndStage(backup, tap)

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
    if (status.signal === null && status.code !== 0) throw psqlFailure(status, psql.stderr(), importer.command)
    if (status.signal === null) throw new OperationError(`${importer.command} stopped before the end of ${backup.id} (the dump ends its session early?)`)
    throw feedFailure(error, backup.id, progress.readBytes)
  }

  if (psqlExit && !(psqlExit.code === 0 && progress.readBytes === backup.sizeBytes)) {
    throw psqlExit.code === 0
      ? new OperationError(`${importer.command} stopped before the end of ${backup.id} (the dump ends its session early?)`)
      : psqlFailure(psqlExit, psql.stderr(), importer.command)
  }

  stdin.end()
  const status = await psql.exited
  if (status.code !== 0) throw psqlFailure(status, psql.stderr(), importer.command)
  return {...progress, sha256: tap.sha256(), sizeBytes: tap.sizeBytes, warnings: serverMessages(psql.stderr(), 'WARNING')}
}

const SERVER_LINE = /^(?:psql:[^:]*:\d+: |pg_restore: error: could not execute query: )?(ERROR|FATAL|PANIC|WARNING|NOTICE|DETAIL|HINT|CONTEXT|LINE \d+|QUERY|STATEMENT):/
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
export function psqlFailure(status: ExitStatus, stderr: string, command = 'psql'): OperationError {
  const errors = serverMessages(stderr, 'ERROR')
  if (errors.length === 0) {
    const clientError = stderr.split('\n').find((line) => /\berror:/.test(line))
    return clientError ? new OperationError(clientError.trim()) : toolFailure(command, status, stderr)
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

/** Iterates the storage stream, so a read error is known to be storage's (StorageReadError), never taken for the end. */
function readStorageStage(backup: BackupMetadata, progress: ImportProgress) {
  return async function* readStorage(source: AsyncIterable<Buffer>) {
    try {
      for await (const chunk of source) yield chunk
    } catch (error) {
      throw storageReadFailure(error, backup.id, progress.readBytes)
    }
  }
}

/** Passes the stored bytes on and fails at their end unless their size and sha256 are the sidecar's. */
function verifyAtEndStage(backup: BackupMetadata, tap: ReturnType<typeof hashTap>) {
  return async function* verifyAtEnd(source: AsyncIterable<Buffer>) {
    yield* tap.stage(source)
    const sha256 = tap.sha256()
    if (tap.sizeBytes !== backup.sizeBytes || sha256 !== backup.sha256) {
      throw new OperationError(
        `integrity check failed for ${backup.id}: read ${tap.sizeBytes} bytes with sha256 ${sha256}, its metadata says ` +
          `${backup.sizeBytes} bytes with sha256 ${backup.sha256}; the stored dump is damaged or was altered`,
      )
    }
  }
}

/**
 * `pg_restore --jobs N` of a custom-format archive: parallel workers seek in the archive, so it
 * cannot read stdin. The archive is streamed once (storage → sha256 → decompressor) into a file
 * in a new 0700 directory under TMPDIR (onNotice says where), and pg_restore starts only when
 * the whole object was read and its sha256 matched. The directory is removed when this ends,
 * however it ends (an error, Ctrl-C, SIGTERM); after a SIGKILL of dbb, by the next parallel
 * restore (sweepDeadRestoreDirs), which a restore in another pid namespace sharing TMPDIR tells by
 * the directory's heartbeat (keepTouched).
 */
async function importArchiveFromFile(options: ImportOptions): Promise<ImportResult> {
  const {backup} = options
  const jobs = options.archive?.jobs ?? 1
  await sweepDeadRestoreDirs()
  const directory = await makeRestoreTempDir()
  const stopTouching = keepTouched(directory)
  try {
    const file = join(directory, 'archive.dump')
    options.onNotice?.(
      `--jobs ${jobs}: pg_restore needs a seekable file for parallel restore; writing the archive (about ${backup.uncompressedBytes ?? 'unknown'} bytes) to ${file} first (removed when the restore ends)`,
    )
    const progress: ImportProgress = {readBytes: 0, restoredBytes: 0}
    const tap = hashTap((bytes) => (progress.readBytes = bytes))
    async function* count(source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        progress.restoredBytes += chunk.length
        options.onProgress?.(progress)
        yield chunk
      }
    }

    try {
      const source = await options.storage.get(backup.id, {signal: options.signal})
      await pipeline(
        readStorageStage(backup, progress)(source),
        verifyAtEndStage(backup, tap),
        createObjectDecoder(backup.id, codecOf(backup), options.identityFile),
        count,
        createWriteStream(file, {mode: 0o600}),
        {signal: options.signal},
      )
    } catch (error) {
      throw feedFailure(error, backup.id, progress.readBytes)
    }

    if (options.signal?.aborted) throw new AbortedError('restore interrupted')
    // Its own process group: pg_restore's workers are forked children that would keep writing into
    // the staging database after their leader died; a failure, Ctrl-C or SIGTERM kills them all.
    const restore = spawnToolWithInput('pg_restore', pgRestoreArgs(backup, options.env.PGDATABASE ?? '', {...options.archive, file}), options.env, undefined, {processGroup: true})
    const killGroup = () => {
      try {
        if (restore.child.pid !== undefined) process.kill(-restore.child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }

    options.signal?.addEventListener('abort', killGroup, {once: true})
    restore.child.on('exit', (code) => code === 0 || killGroup())
    restore.child.stdin.on('error', () => {})
    restore.child.stdin.end()
    const status = await restore.exited.finally(() => options.signal?.removeEventListener('abort', killGroup))
    if (options.signal?.aborted) throw new AbortedError('restore interrupted')
    if (status.code !== 0) throw psqlFailure(status, restore.stderr(), 'pg_restore')
    return {...progress, sha256: tap.sha256(), sizeBytes: tap.sizeBytes, warnings: serverMessages(restore.stderr(), 'WARNING')}
  } finally {
    stopTouching()
    await rm(directory, {recursive: true, force: true})
  }
}

/**
 * `pg_restore --list` of a stored custom-format archive, streamed (no temporary file): storage →
 * sha256 → decompressor → pg_restore's stdin. pg_restore reads only the table of contents at the
 * archive's head and exits; the rest of the object is still read, decompressed and discarded, so
 * the listing is returned only for an object whose size and sha256 are the sidecar's and whose
 * compressed stream is whole (a damaged backup fails here as it does in restore and download).
 */
export async function listArchive(options: Pick<ImportOptions, 'storage' | 'backup' | 'signal' | 'identityFile'>): Promise<ArchiveListing & {sha256: string; sizeBytes: number}> {
  const {backup} = options
  // pg_restore --list connects to nothing: it gets no libpq variable and no password.
  const lister = spawnFilter('pg_restore', ['--list'])
  const stdout: Buffer[] = []
  let stderr = ''
  lister.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
  lister.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-16_384)))
  const exited = new Promise<ExitStatus>((resolve) => {
    lister.on('error', (error: NodeJS.ErrnoException) => {
      stderr ||= error.code === 'ENOENT' ? 'pg_restore not found on PATH (install the PostgreSQL client tools)' : error.message
    })
    lister.on('close', (code, signal) => resolve({code, signal}))
  })
  let listerExit: ExitStatus | undefined
  void exited.then((status) => (listerExit = status))
  lister.stdin.on('error', () => {}) // EPIPE once pg_restore has read the TOC and exited

  const progress: ImportProgress = {readBytes: 0, restoredBytes: 0}
  const tap = hashTap((bytes) => (progress.readBytes = bytes))
  async function feedLister(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      if (listerExit || lister.stdin.destroyed) continue // the rest is read only to verify it
      if (!lister.stdin.write(chunk)) await Promise.race([once(lister.stdin, 'drain'), exited]).catch(() => {})
    }

    lister.stdin.end()
  }

  try {
    const source = await options.storage.get(backup.id, {signal: options.signal})
    await pipeline(readStorageStage(backup, progress)(source), verifyAtEndStage(backup, tap), createObjectDecoder(backup.id, codecOf(backup), options.identityFile), feedLister, {signal: options.signal})
  } catch (error) {
    lister.kill('SIGKILL')
    await exited
    throw feedFailure(error, backup.id, progress.readBytes)
  }

  const status = await exited
  if (status.code !== 0) throw toolFailure('pg_restore --list', status, stderr)
  return {...parseArchiveList(Buffer.concat(stdout).toString('utf8')), sha256: tap.sha256(), sizeBytes: tap.sizeBytes}
}
