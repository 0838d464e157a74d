import type {Client} from 'pg'

import {captureContents, compareContents} from '../backup/contents-record'
import {BackupMetadata, resolveBackup, restoreSupport} from '../backup/metadata'
import type {DatabaseConfig} from '../config'
import {connect, libpqEnvironment, withClient} from '../db/connection'
import {prepareDecryption} from '../encrypt/age'
import {AbortedError, OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import {requirePgRestoreFor} from '../restore/archive'
import {ImportProgress, StorageReadError, importDump} from '../restore/import'
import {dropDatabase, terminateSessions} from '../restore/database'
import type {StorageBackend} from '../storage/contract'
import {VERSION} from '../version'
import {DrillResult, writeDrillResult} from './result'
import {DRILL_MAINTENANCE_DATABASE, clearScratch, createScratch, lockScratch, scratchDatabaseName, unlockScratch} from './scratch'

export interface DrillDependencies {
  /** The server drills restore on (DRILL_DB_* over DB_*); its database name is not used. */
  server: DatabaseConfig
  storage: StorageBackend
  namePrefix: string
  logger: Logger
  /** AGE_IDENTITY_FILE: drills of encrypted backups need it (src/encrypt). */
  identityFile?: string
}

export interface DrillOptions {
  /** A backup id or "latest" (the newest logical backup with the prefix). */
  reference: string
  signal?: AbortSignal
  onProgress?: (progress: ImportProgress) => void
  /** Called once the backup is resolved, before anything is restored (a job reports it while running). */
  onBackup?: (backup: BackupMetadata) => void
  now?: () => Date
}

/**
 * One restore drill of a logical backup:
 *
 *   resolve → lock the scratch name (advisory lock on the drill server) → drop a dead drill's
 *   leftover (only a database marked as dbb's) → create the marked scratch database → import
 *   the dump in one pass (the restore's own importer: sha256 checked) → compare with the
 *   backup's contents record → drop the scratch database → write `<id>.drill.json`.
 *
 * The verdict is "failed" when the backup itself is at fault: it did not import (psql error,
 * sha256 mismatch, broken gzip) or the restored database differs from the record. Failures of
 * the drill's surroundings (drill server unreachable, storage unreadable, the name taken by a
 * database dbb did not make, Ctrl-C) throw instead: no verdict, no drill sidecar. The scratch
 * database is dropped in every case this process survives; a SIGKILLed drill's is dropped by the next.
 */
export async function runDrill(deps: DrillDependencies, options: DrillOptions): Promise<DrillResult> {
  const {storage} = deps
  const {signal} = options
  const now = options.now ?? (() => new Date())
  const backup = await resolveBackup(storage, options.reference, {prefix: deps.namePrefix, type: 'logical'})
  const unsupported = restoreSupport(backup)
  if (unsupported) throw new OperationError(unsupported)
  if (backup.type !== 'logical') {
    throw new UsageError(
      `${backup.id} is a ${backup.type} backup: drill it with dbb drill ${backup.id} --type base (a physical drill on a private PostgreSQL server)`,
    )
  }
  if (backup.format !== 'plain' && backup.format !== 'custom') throw new OperationError(`${backup.id} is in format ${backup.format}; this dbb drills plain SQL dumps and custom-format archives`)
  // pg_restore older than the archive's pg_dump cannot read it: the drill server's tools are at fault, not the backup (no verdict).
  if (backup.format === 'custom') await requirePgRestoreFor(backup)
  options.onBackup?.(backup)
  // A wrong or missing identity is the drill's surroundings, not the backup: no verdict, nothing created.
  const identityFile = await prepareDecryption(storage, backup.id, deps.identityFile, signal)

  const scratch = scratchDatabaseName(backup.database)
  const server = `${deps.server.host}:${deps.server.port}`
  const log = deps.logger.child({backupId: backup.id, scratchDatabase: scratch})
  const startedAt = now()
  log.info({event: 'drill.started', server, contentsRecorded: backup.contents !== undefined}, `drill of ${backup.id} into ${scratch} on ${server}`)

  const client = await connect(deps.server, {database: DRILL_MAINTENANCE_DATABASE}).catch((error: unknown) => {
    throw new OperationError(`drill server: ${errorMessage(error)}`)
  })
  client.on('error', () => {})
  let created = false
  let dropped = false
  let outcome: DrillVerdict | undefined
  try {
    if (!(await lockScratch(client, scratch))) {
      throw new OperationError(`another drill into "${scratch}" is running on ${server} (a dbb replica?); try again when it has finished`)
    }

    try {
      if (await clearScratch(client, scratch)) log.warn({event: 'drill.leftover_dropped'}, `dropped ${scratch}, left by a drill that was killed`)
      if (signal?.aborted) throw new AbortedError('drill interrupted')
      await createScratch(client, scratch, {source: backup.database, backupId: backup.id, startedAt: startedAt.toISOString(), pid: process.pid})
      created = true
      // psql may be executing the dump's last statements, past the point where importDump reads the
      // signal: ending the scratch database's sessions makes it stop there too.
      const stopImport = () => void terminateSessions(client, scratch).catch(() => {})
      signal?.addEventListener('abort', stopImport, {once: true})
      try {
        outcome = await restoreAndCompare({...deps, identityFile}, backup, scratch, options)
      } finally {
        signal?.removeEventListener('abort', stopImport)
      }
    } finally {
      if (created) dropped = await dropScratch(client, scratch, log)
      await unlockScratch(client, scratch).catch(() => {})
    }
  } catch (error) {
    log.error({event: 'drill.aborted', error: errorMessage(error)}, `drill of ${backup.id} did not finish: ${errorMessage(error)}`)
    const scratchFate = !created || dropped ? `the scratch database ${scratch} was dropped` : `the scratch database ${scratch} is dropped by the next drill`
    if (signal?.aborted) throw new AbortedError(`drill interrupted; ${scratchFate}`)
    throw error
  } finally {
    await client.end().catch(() => {})
  }

  if (!outcome) throw new OperationError('the drill ended without a verdict')
  const finishedAt = now()
  const result: DrillResult = {...outcome, server, startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), durationMs: finishedAt.getTime() - startedAt.getTime()}
  await writeDrillResult(storage, result).catch((error: unknown) => {
    throw new OperationError(`the drill ${result.status}, but its result could not be stored as ${backup.id}.drill.json: ${errorMessage(error)}`)
  })
  // The events a notifier hooks into (issue 19, Notifications): one per finished drill.
  if (result.status === 'passed') {
    log.info({event: 'drill.passed', restoreMs: result.restoreMs, checked: result.checked, sizeBytes: result.sizeBytes}, `drill of ${backup.id} passed`)
  } else {
    log.error({event: 'drill.failed', restoreMs: result.restoreMs, differences: result.differences, error: result.error}, `drill of ${backup.id} failed: ${describeFailure(result)}`)
  }

  return result
}

/** What restoreAndCompare decides; runDrill adds where and when. */
type DrillVerdict = Pick<DrillResult, 'backupId' | 'status' | 'checked' | 'differences' | 'error' | 'restoreMs' | 'sizeBytes' | 'restoredBytes' | 'scratchDatabase' | 'dbbVersion'>

async function restoreAndCompare(
  deps: DrillDependencies,
  backup: BackupMetadata,
  scratch: string,
  options: DrillOptions,
): Promise<DrillVerdict> {
  const base = {backupId: backup.id, sizeBytes: backup.sizeBytes, scratchDatabase: scratch, dbbVersion: VERSION}
  const checked = backup.contents ? ('contents' as const) : ('restore' as const)
  const started = Date.now()
  let restoredBytes = 0
  try {
    const imported = await importDump({
      storage: deps.storage,
      backup,
      env: libpqEnvironment(deps.server, {database: scratch}),
      signal: options.signal,
      onProgress: options.onProgress,
      identityFile: deps.identityFile,
    })
    restoredBytes = imported.restoredBytes
  } catch (error) {
    // Not the backup's fault: no verdict.
    if (options.signal?.aborted || error instanceof AbortedError || error instanceof StorageReadError) throw error
    return {...base, status: 'failed', checked, differences: [], error: `the restore failed: ${errorMessage(error)}`, restoreMs: Date.now() - started, restoredBytes}
  }

  const restoreMs = Date.now() - started
  if (options.signal?.aborted) throw new AbortedError('drill interrupted')
  if (!backup.contents) return {...base, status: 'passed', checked, differences: [], restoreMs, restoredBytes}
  const expected = backup.contents
  const actual = await withClient(deps.server, (client: Client) => captureContents(client, {checksums: expected.checksums}), {database: scratch})
  const differences = compareContents(expected, actual)
  return {...base, status: differences.length === 0 ? 'passed' : 'failed', checked, differences, restoreMs, restoredBytes}
}

async function dropScratch(client: Client, scratch: string, log: Logger): Promise<boolean> {
  return dropDatabase(client, scratch).then(
    () => true,
    (error: unknown) => {
      log.error({event: 'drill.cleanup_failed', error: errorMessage(error)}, `could not drop ${scratch}; the next drill drops it`)
      return false
    },
  )
}

/** One line: the restore error, or each difference. */
export function describeFailure(result: DrillResult): string {
  if (result.error) return result.error
  return result.differences.map((d) => `${d.object}: expected ${d.expected}, restored ${d.actual}`).join('; ')
}
