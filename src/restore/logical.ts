import {Writable} from 'node:stream'

import {toolVersion} from '../backup/child-process'
import {downloadBackup} from '../backup/download'
import {BackupMetadata, restoreSupport} from '../backup/metadata'
import type {DatabaseConfig} from '../config'
import {libpqEnvironment, serverVersion} from '../db/connection'
import {AbortedError, OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {maintenanceDatabase, recreateDatabase} from './database'
import {ImportProgress, importDump} from './import'

export interface LogicalRestoreDependencies {
  /** Connection settings; the target database name comes from the options. */
  database: DatabaseConfig
  storage: StorageBackend
  logger: Logger
}

export interface LogicalRestoreOptions {
  backup: BackupMetadata
  targetDatabase: string
  signal?: AbortSignal
  /** Bytes hashed so far in the verifying pass. */
  onVerifyProgress?: (bytes: number) => void
  onProgress?: (progress: ImportProgress) => void
  /** Called as each step ends, before the next begins (e.g. to close a progress line). */
  onStep?: (step: 'verified' | 'recreated') => void
}

export interface RestoreOutcome {
  id: string
  createdAt: string
  sizeBytes: number
  sha256: string
  host: string
  port: number
  database: string
  /** The target database existed and was replaced (false: it was created). */
  replacedExisting: boolean
  terminatedSessions: number
  /** SQL bytes psql executed. */
  restoredBytes: number
  durationMs: number
}

/**
 * Restores a logical (pg_dump plain SQL, gzip) backup into `targetDatabase`, replacing it.
 *
 * Nothing touches the database until the stored dump's sha256 matches its sidecar (a first,
 * streaming pass over storage), psql is installed and the server answers. Then other sessions on
 * the target are terminated, it is dropped and created empty, and the dump is streamed into psql
 * as one transaction (see importDump): any failure leaves the new database empty.
 */
export async function restoreLogical(deps: LogicalRestoreDependencies, options: LogicalRestoreOptions): Promise<RestoreOutcome> {
  const {backup, targetDatabase: target, signal} = options
  const {database, storage} = deps
  const unsupported = restoreSupport(backup)
  if (unsupported) throw new OperationError(unsupported)
  if (backup.type !== 'logical') throw new UsageError(`${backup.id} is a ${backup.type} backup, not a logical (SQL) dump`)
  if (backup.format !== 'plain' || backup.compression !== 'gzip') {
    throw new OperationError(`${backup.id} is in format ${backup.format}/${backup.compression}; this dbb restores plain SQL dumps compressed with gzip`)
  }

  const started = Date.now()
  const log = deps.logger.child({backupId: backup.id, database: target})
  const untouched = 'nothing was changed'
  log.info({event: 'restore.verifying', sizeBytes: backup.sizeBytes}, 'verifying the stored dump before touching the database')
  await downloadBackup(storage, backup, {stream: discard()}, {signal, onProgress: options.onVerifyProgress}).catch((error: unknown) => {
    throw withSuffix(error, untouched)
  })
  const [psqlVersion, pgVersion] = await Promise.all([
    toolVersion('psql'),
    // Through the maintenance database: the target may not exist yet.
    serverVersion({...database, database: maintenanceDatabase(target)}).catch((error: unknown) => {
      throw new OperationError(errorMessage(error))
    }),
  ]).catch((error: unknown) => {
    throw withSuffix(error, untouched)
  })
  if (signal?.aborted) throw new AbortedError(`restore interrupted; ${untouched}`)
  options.onStep?.('verified')
  log.info({event: 'restore.verified', sha256: backup.sha256, psqlVersion, pgVersion}, 'sha256 matches; replacing the database')

  const recreated = await recreateDatabase(database, target)
  options.onStep?.('recreated')
  log.info({event: 'restore.database_recreated', ...recreated}, `database ${target} ${recreated.replaced ? 'dropped and ' : ''}created empty`)

  let imported: ImportProgress
  try {
    imported = await importDump({storage, backup, env: libpqEnvironment(database, {database: target}), signal, onProgress: options.onProgress})
  } catch (error) {
    const rolledBack = `the import was rolled back: database "${target}" exists and is empty`
    log.error({event: 'restore.failed', error: errorMessage(error)}, 'restore failed, import rolled back')
    if (error instanceof AbortedError) throw new AbortedError(`restore interrupted; ${rolledBack}`)
    throw new OperationError(`restore failed: ${errorMessage(error)}\n${rolledBack}`, {cause: error})
  }

  const durationMs = Date.now() - started
  log.info({event: 'restore.succeeded', restoredBytes: imported.restoredBytes, durationMs}, 'restore succeeded')
  return {
    id: backup.id,
    createdAt: backup.createdAt,
    sizeBytes: backup.sizeBytes,
    sha256: backup.sha256,
    host: database.host,
    port: database.port,
    database: target,
    replacedExisting: recreated.replaced,
    terminatedSessions: recreated.terminatedSessions,
    restoredBytes: imported.restoredBytes,
    durationMs,
  }
}

function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback()
    },
  })
}

function withSuffix(error: unknown, suffix: string): Error {
  if (error instanceof AbortedError || (error as {name?: string}).name === 'AbortError') return new AbortedError(`restore interrupted; ${suffix}`)
  if (error instanceof UsageError) return error
  return new OperationError(`${errorMessage(error)}; ${suffix}`, {cause: error})
}
