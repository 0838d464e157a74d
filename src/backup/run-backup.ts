import type {CompressionConfig, DatabaseConfig} from '../config'
import {libpqEnvironment, serverVersion} from '../db/connection'
import {AbortedError, OperationError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {VERSION} from '../version'
import {spawnTool, toolVersion} from './child-process'
import {BackupMetadata, writeSidecar} from './metadata'
import {newBackupId, sidecarKey} from './naming'
import {StreamProgress, streamToStorage} from './pipeline'
import {PruneResult, prune} from './prune'
import {RetentionRules} from './retention'
import {verifyStoredDump} from './verify'

export type TriggeredBy = 'cli' | 'scheduler' | 'api'

export interface BackupDependencies {
  database: DatabaseConfig
  storage: StorageBackend
  namePrefix: string
  retention: RetentionRules
  logger: Logger
  /** COMPRESSION_LEVEL / COMPRESSION_THREADS; the defaults of src/compress/defaults.ts when absent. */
  compression?: CompressionConfig
}

export interface BackupOptions {
  triggeredBy: TriggeredBy
  signal?: AbortSignal
  /** Apply retention after a successful backup (default true). */
  prune?: boolean
  onProgress?: (progress: StreamProgress) => void
  now?: () => Date
}

export interface BackupOutcome {
  metadata: BackupMetadata
  pruned?: PruneResult
  /** Retention failed after the backup succeeded; the backup stands. */
  pruneError?: string
}

export const PG_DUMP_ARGS = ['--no-owner', '--no-privileges', '--format=plain']

/**
 * One logical backup, start to finish; shared by `dbb backup run` and the scheduler/API of
 * `dbb serve`. Order matters: the storage and the server are checked before anything is written;
 * the dump is streamed, then read back and verified; only then is the sidecar written, which is
 * what makes the backup exist. Any failure removes what this run wrote.
 */
export async function runLogicalBackup(deps: BackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  const {storage, logger} = deps
  const now = options.now ?? (() => new Date())
  try {
    await storage.health()
  } catch (error) {
    throw new OperationError(`storage ${storage.name} (${storage.location}) is not usable: ${errorMessage(error)}`)
  }

  const [pgVersion, pgDumpVersion] = await Promise.all([
    serverVersion(deps.database).catch((error: unknown) => {
      throw new OperationError(errorMessage(error))
    }),
    toolVersion('pg_dump'),
  ])

  const startedAt = now()
  const id = await newBackupId(deps.namePrefix, startedAt, async (candidate) => {
    const [dump, sidecar] = await Promise.all([storage.stat(candidate), storage.stat(sidecarKey(candidate))])
    return dump !== undefined || sidecar !== undefined
  })
  const log = logger.child({backupId: id})
  log.info({event: 'backup.started', database: deps.database.database, storage: storage.location, pgVersion, pgDumpVersion}, 'backup started')

  let stored = false
  let committed: BackupMetadata | undefined
  try {
    const result = await streamToStorage({
      start: (signal) => spawnTool('pg_dump', PG_DUMP_ARGS, libpqEnvironment(deps.database), signal),
      commandName: 'pg_dump',
      storage,
      key: id,
      signal: options.signal,
      compressionLevel: deps.compression?.level,
      compressionThreads: deps.compression?.threads,
      onProgress: options.onProgress,
    })
    stored = true
    log.info({event: 'backup.stored', sizeBytes: result.sizeBytes, sha256: result.sha256}, 'dump stored, verifying')
    await verifyStoredDump(storage, id, result, options.signal)

    const metadata: BackupMetadata = {
      id,
      type: 'logical',
      createdAt: startedAt.toISOString(),
      sizeBytes: result.sizeBytes,
      sha256: result.sha256,
      uncompressedBytes: result.sourceBytes,
      durationMs: now().getTime() - startedAt.getTime(),
      triggeredBy: options.triggeredBy,
      database: deps.database.database,
      pgVersion,
      pgDumpVersion,
      format: 'plain',
      compression: 'gzip',
      dbbVersion: VERSION,
    }
    if (options.signal?.aborted) throw new AbortedError('backup interrupted')
    await writeSidecar(storage, metadata)
    log.info({event: 'backup.succeeded', durationMs: metadata.durationMs, sizeBytes: metadata.sizeBytes}, 'backup succeeded')
    committed = metadata
  } catch (error) {
    if (stored) {
      await storage.delete(id).catch((deleteError: unknown) => {
        log.error({event: 'backup.cleanup_failed', err: errorMessage(deleteError)}, 'could not remove the unverified dump')
      })
    }

    log.error({event: 'backup.failed', error: errorMessage(error)}, 'backup failed')
    throw error instanceof Error && 'exitCode' in error ? error : new OperationError(`backup failed: ${errorMessage(error)}`, {cause: error})
  }

  // Retention runs only after a verified backup exists. Its failure does not undo the backup.
  if (options.prune === false) return {metadata: committed}
  try {
    return {metadata: committed, pruned: await prune(storage, {prefix: deps.namePrefix, rules: deps.retention, logger: log})}
  } catch (error) {
    log.error({event: 'prune.failed', error: errorMessage(error)}, 'retention failed after a successful backup')
    return {metadata: committed, pruneError: errorMessage(error)}
  }
}
