import type {BaseBackupConfig} from '../config'
import {libpqEnvironment, withClient} from '../db/connection'
import {AbortedError, OperationError, errorMessage} from '../errors'
import {VERSION} from '../version'
import {parseLsn, parseSegmentSize, segmentNameForLsn} from '../wal/segments'
import {spawnTool, toolVersion} from './child-process'
import {BackupMetadata, writeSidecar} from './metadata'
import {newBackupId, sidecarKey} from './naming'
import {streamToStorage} from './pipeline'
import {prune} from './prune'
import type {BackupDependencies, BackupOptions, BackupOutcome} from './run-backup'
import {verifyStoredDump} from './verify'

export interface BaseBackupDependencies extends BackupDependencies {
  baseBackup: BaseBackupConfig
}

/** Where pg_basebackup --verbose says the backup starts and stops in the WAL stream. */
export interface WalRange {
  startLsn: string
  timeline: number
  stopLsn: string
}

/**
 * pg_basebackup's arguments: the cluster as one tar stream on stdout (no copy on local disk). WAL
 * is either fetched into the tar at the end (`fetch`: the backup restores on its own) or left to
 * the archive (`none`: the server then waits until the archive has it). Connection settings are
 * in the environment, never here.
 */
export function pgBasebackupArgs(config: BaseBackupConfig, label: string): string[] {
  return ['-D', '-', '--format=tar', `--wal-method=${config.walMethod}`, `--checkpoint=${config.checkpoint}`, `--label=${label}`, '--no-password', '--verbose']
}

/** Reads the start/stop lines of `pg_basebackup --verbose` (messages forced to English with LC_ALL=C). */
export function parseWalRange(stderr: string): WalRange | undefined {
  const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/i.exec(stderr)
  const stop = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/i.exec(stderr)
  if (!start || !stop) return undefined
  return {startLsn: start[1], timeline: Number(start[2]), stopLsn: stop[1]}
}

/**
 * One physical base backup, the counterpart of runLogicalBackup and built the same way: checks
 * first, then pg_basebackup's tar stream through THE pipeline (gzip, sha256, storage), read back
 * and verified, and only then the sidecar, which here also records the timeline, start/stop LSN
 * and the first WAL segment a restore needs (what WAL pruning must keep).
 */
export async function runBaseBackup(deps: BaseBackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  const {storage, logger} = deps
  const now = options.now ?? (() => new Date())
  try {
    await storage.health()
  } catch (error) {
    throw new OperationError(`storage ${storage.name} (${storage.location}) is not usable: ${errorMessage(error)}`)
  }

  const [server, pgBasebackupVersion] = await Promise.all([
    withClient(deps.database, async (client) => {
      const version = await client.query<{server_version: string}>('SHOW server_version')
      const segment = await client.query<{wal_segment_size: string}>('SHOW wal_segment_size')
      return {pgVersion: version.rows[0].server_version.split(' ')[0], walSegmentSize: parseSegmentSize(segment.rows[0].wal_segment_size)}
    }).catch((error: unknown) => {
      throw new OperationError(errorMessage(error))
    }),
    toolVersion('pg_basebackup'),
  ])

  const startedAt = now()
  const id = await newBackupId(
    deps.namePrefix,
    startedAt,
    async (candidate) => (await storage.stat(candidate)) !== undefined || (await storage.stat(sidecarKey(candidate))) !== undefined,
    'tar',
  )
  const log = logger.child({backupId: id})
  log.info({event: 'backup.started', type: 'base', storage: storage.location, pgVersion: server.pgVersion, pgBasebackupVersion}, 'base backup started')

  let verboseOutput = ''
  let stored = false
  let committed: BackupMetadata | undefined
  try {
    const result = await streamToStorage({
      start: (signal) => {
        // LC_ALL=C: the start/stop lines are parsed, so they must not be translated.
        const tool = spawnTool('pg_basebackup', pgBasebackupArgs(deps.baseBackup, `dbb ${id}`), {...libpqEnvironment(deps.database), LC_ALL: 'C'}, signal)
        tool.child.stderr.on('data', (text: string) => {
          verboseOutput = (verboseOutput + text).slice(-64 * 1024)
        })
        return tool
      },
      commandName: 'pg_basebackup',
      storage,
      key: id,
      signal: options.signal,
      compressionLevel: deps.compression?.level,
      compressionThreads: deps.compression?.threads,
      onProgress: options.onProgress,
    })
    stored = true
    const range = parseWalRange(verboseOutput)
    if (!range) throw new OperationError('pg_basebackup did not report its WAL start and end points (expected in its --verbose output)')
    log.info({event: 'backup.stored', sizeBytes: result.sizeBytes, sha256: result.sha256, ...range}, 'base backup stored, verifying')
    await verifyStoredDump(storage, id, result, options.signal)

    const metadata: BackupMetadata = {
      id,
      type: 'base',
      createdAt: startedAt.toISOString(),
      sizeBytes: result.sizeBytes,
      sha256: result.sha256,
      uncompressedBytes: result.sourceBytes,
      durationMs: now().getTime() - startedAt.getTime(),
      triggeredBy: options.triggeredBy,
      // A base backup holds the whole cluster, not one database.
      database: '*',
      pgVersion: server.pgVersion,
      pgBasebackupVersion,
      format: 'tar',
      compression: 'gzip',
      timeline: range.timeline,
      startLsn: range.startLsn,
      stopLsn: range.stopLsn,
      firstWalSegment: segmentNameForLsn(range.timeline, parseLsn(range.startLsn), server.walSegmentSize),
      walSegmentSize: server.walSegmentSize,
      walMethod: deps.baseBackup.walMethod,
      dbbVersion: VERSION,
    }
    if (options.signal?.aborted) throw new AbortedError('backup interrupted')
    await writeSidecar(storage, metadata)
    log.info({event: 'backup.succeeded', type: 'base', durationMs: metadata.durationMs, firstWalSegment: metadata.firstWalSegment}, 'base backup succeeded')
    committed = metadata
  } catch (error) {
    if (stored) {
      await storage.delete(id).catch((deleteError: unknown) => {
        log.error({event: 'backup.cleanup_failed', err: errorMessage(deleteError)}, 'could not remove the unverified base backup')
      })
    }

    log.error({event: 'backup.failed', type: 'base', error: errorMessage(error)}, 'base backup failed')
    throw error instanceof Error && 'exitCode' in error ? error : new OperationError(`base backup failed: ${errorMessage(error)}`, {cause: error})
  }

  if (options.prune === false) return {metadata: committed}
  try {
    return {metadata: committed, pruned: await prune(storage, {prefix: deps.namePrefix, rules: deps.retention, logger: log})}
  } catch (error) {
    log.error({event: 'prune.failed', error: errorMessage(error)}, 'retention failed after a successful base backup')
    return {metadata: committed, pruneError: errorMessage(error)}
  }
}
