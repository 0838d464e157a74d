import type {Writable} from 'node:stream'

import {requireCodec} from '../compress/codec-streams'
import type {CompressionConfig, DatabaseConfig, EncryptionConfig, LogicalDumpConfig} from '../config'
import {requireAgeForRecipients} from '../encrypt/age'
import {encryptionRecord} from '../encrypt/recipients'
import {AbortedError, OperationError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {VERSION} from '../version'
import type {SpawnedTool} from './child-process'
import {BackupMetadata, writeSidecar} from './metadata'
import {IdClaim, claimBackupId, heartbeatInterval} from './claim-id'
import type {BackupKind} from './naming'
import {removeLeftoversQuietly} from './leftovers'
import {PipelineResult, StreamProgress, streamToStorage} from './pipeline'
import {PruneResult, describeDamaged, prune} from './prune'
import type {RetentionRules} from './retention'
import {verifyStoredDump} from './verify'

export type TriggeredBy = 'cli' | 'scheduler' | 'api'

export interface BackupDependencies {
  database: DatabaseConfig
  storage: StorageBackend
  namePrefix: string
  retention: RetentionRules
  logger: Logger
  /** COMPRESSION / COMPRESSION_LEVEL / COMPRESSION_THREADS; the defaults of src/compress/defaults.ts when absent. */
  compression?: CompressionConfig
  /** BACKUP_NO_OWNER; dumps keep owners and privileges when absent. */
  logicalDump?: LogicalDumpConfig
  /** ENCRYPTION_RECIPIENTS (src/encrypt); stored unencrypted when absent. */
  encryption?: EncryptionConfig
}

export interface BackupOptions {
  triggeredBy: TriggeredBy
  signal?: AbortSignal
  /** Apply retention after a successful backup (default true). */
  prune?: boolean
  onProgress?: (progress: StreamProgress) => void
  /** Called once the backup's id is claimed, before anything is written under it (a job reports it while running). */
  onIdClaimed?: (id: string) => void
  now?: () => Date
}

export interface BackupOutcome {
  metadata: BackupMetadata
  pruned?: PruneResult
  /** Retention failed after the backup succeeded; the backup stands. */
  pruneError?: string
}

/** The sidecar fields a recipe supplies; storeBackup adds id, sizes, sha256, timing and versions. */
export type RecipeFields = Pick<BackupMetadata, 'database' | 'pgVersion' | 'format'> & Record<string, unknown>

/** What differs between a logical dump and a base backup; the lifecycle around it is storeBackup's. */
export interface BackupRecipe {
  type: BackupMetadata['type']
  /** Ids end in `.sql.<codec>`, `.dump.<codec>` (custom format) or `.tar.<codec>`. */
  kind: BackupKind
  /** The program whose stdout is the backup (pg_dump, pg_basebackup), for messages. */
  commandName: string
  /** Starts it; the signal kills it. With `output` it writes there (a compressor program's stdin), not to its stdout pipe. */
  start(id: string, signal: AbortSignal, output?: Writable): SpawnedTool
  /** dbb reads the producer's output itself (a wrapper taps it): no `output` is given, dbb compresses what it reads. */
  outputThroughDbb?: boolean
  /** This type's sidecar fields, once the stream is stored and verified. Throwing fails (and removes) the backup. */
  sidecarFields(result: PipelineResult): RecipeFields
  /** Logged with `backup.started`. */
  context: Record<string, unknown>
}

/**
 * The life of one backup, whatever produces it. Order matters: storage is checked and the recipe
 * is prepared (server and tool checks, concurrently) before anything is written; the stream goes through THE
 * pipeline; it is read back and verified; only then is the sidecar written, which is what makes
 * the backup exist. Any failure removes what this run wrote. Retention runs last, and its failure
 * does not undo the backup.
 */
export async function storeBackup(
  deps: BackupDependencies,
  options: BackupOptions,
  prepare: () => Promise<BackupRecipe>,
): Promise<BackupOutcome> {
  const {storage, logger} = deps
  const now = options.now ?? (() => new Date())
  const codec = deps.compression?.codec ?? 'gzip'
  // The checks before anything is written are independent round trips (storage, the server, the
  // tools): run at once, they cost the slowest one instead of their sum. All of them are awaited
  // (a recipe that is still preparing must not outlive a failure), and the first failure in this
  // order is the one reported: storage, then the server and tools, then the codec and age.
  // COMPRESSION=zstd without the zstd program, ENCRYPTION_RECIPIENTS without the age program or
  // with a recipient age refuses: exit 2 naming what to fix, before anything is written or removed
  // (a dead run's leftovers are removed only once the codec and age are known usable).
  const recipients = deps.encryption?.recipients
  const codecReady = Promise.all([requireCodec(codec, 'compress'), recipients ? requireAgeForRecipients(recipients) : undefined]).then(() => {})
  const storageReady = storage.health().then(
    async () => {
      await codecReady
      await removeLeftoversQuietly(storage, {prefix: deps.namePrefix, logger})
    },
    (error: unknown) => {
      throw new OperationError(`storage ${storage.name} (${storage.location}) is not usable: ${errorMessage(error)}`)
    },
  )
  const [storageSettled, prepared, codecSettled] = await Promise.allSettled([storageReady, prepare(), codecReady])
  // A codec or age failure also rejects storageReady (it waits for the codec) with the same error.
  for (const settled of [storageSettled, prepared, codecSettled]) if (settled.status === 'rejected') throw settled.reason
  const recipe = (prepared as PromiseFulfilledResult<BackupRecipe>).value
  const startedAt = now()
  // Claimed, not just picked: a concurrent run must never write the same key (see claim-id.ts).
  // The claim's heartbeat keeps a concurrent prune from taking this run's objects for orphans.
  let log = logger
  const claim = await claimBackupId(storage, deps.namePrefix, startedAt, recipe.kind, {
    heartbeatMs: heartbeatInterval(deps.retention.orphanGraceMs),
    codec,
    encrypted: recipients !== undefined,
    onHeartbeatError: (error) => log.warn({event: 'backup.heartbeat_failed', error: errorMessage(error)}, 'could not refresh the id claim'),
  })
  const {id} = claim
  options.onIdClaimed?.(id)
  log = logger.child({backupId: id})
  log.info({event: 'backup.started', type: recipe.type, storage: storage.location, ...recipe.context}, `${recipe.type} backup started`)

  let stored = false
  let metadata: BackupMetadata
  try {
    const result = await streamToStorage({
      start: (signal, output) => recipe.start(id, signal, output),
      outputThroughDbb: recipe.outputThroughDbb,
      commandName: recipe.commandName,
      storage,
      key: id,
      signal: options.signal,
      codec,
      compressionLevel: deps.compression?.level,
      compressionThreads: deps.compression?.threads,
      onProgress: options.onProgress,
      encryptTo: recipients,
    })
    stored = true
    log.info({event: 'backup.stored', sizeBytes: result.sizeBytes, sha256: result.sha256}, 'stored, verifying')
    await verifyStoredDump(storage, id, result, options.signal)
    // A phase boundary of its own (the crash-point matrix kills here): stored and read back, no sidecar yet.
    log.debug({event: 'backup.verified', sha256: result.sha256}, 'read back and verified, writing the sidecar')
    metadata = {
      id,
      type: recipe.type,
      createdAt: startedAt.toISOString(),
      sizeBytes: result.sizeBytes,
      sha256: result.sha256,
      uncompressedBytes: result.sourceBytes,
      durationMs: now().getTime() - startedAt.getTime(),
      triggeredBy: options.triggeredBy,
      compression: codec,
      dbbVersion: VERSION,
      // Fingerprints only: which keys can read it, never a key.
      ...(recipients ? {encryption: encryptionRecord(recipients)} : {}),
      ...recipe.sidecarFields(result),
    }
    if (options.signal?.aborted) throw new AbortedError('backup interrupted')
    await writeSidecar(storage, metadata)
    log.info({event: 'backup.succeeded', type: recipe.type, durationMs: metadata.durationMs, sizeBytes: metadata.sizeBytes}, `${recipe.type} backup succeeded`)
  } catch (error) {
    if (stored) {
      await storage.delete(id).catch((deleteError: unknown) => {
        log.error({event: 'backup.cleanup_failed', err: errorMessage(deleteError)}, 'could not remove the unverified backup')
      })
    }

    // Only now: while the claim stands, no other run can take this id and lose its dump to the delete above.
    await releaseClaim(claim, log)

    log.error({event: 'backup.failed', type: recipe.type, error: errorMessage(error)}, `${recipe.type} backup failed`)
    throw error instanceof Error && 'exitCode' in error ? error : new OperationError(`backup failed: ${errorMessage(error)}`, {cause: error})
  }

  await releaseClaim(claim, log)
  log.debug({event: 'backup.claim_released'}, 'id claim removed')
  if (options.prune === false) return {metadata}
  try {
    const pruned = await prune(storage, {prefix: deps.namePrefix, rules: deps.retention, logger: log})
    // The new backup stands; damaged older ones are the operator's to look at, said where the backup's result is read.
    return pruned.damaged.length > 0 ? {metadata, pruned, pruneError: describeDamaged(pruned.damaged)} : {metadata, pruned}
  } catch (error) {
    log.error({event: 'prune.failed', error: errorMessage(error)}, 'retention failed after a successful backup')
    return {metadata, pruneError: errorMessage(error)}
  }
}

/** A claim left behind is harmless (an orphan prune removes after ORPHAN_GRACE): log, never fail the backup for it. */
async function releaseClaim(claim: IdClaim, log: Logger): Promise<void> {
  await claim.release().catch((error: unknown) => log.warn({event: 'backup.claim_release_failed', error: errorMessage(error)}, 'could not remove the id claim'))
}
