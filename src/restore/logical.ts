import {setTimeout as sleep} from 'node:timers/promises'
import {type Client, escapeIdentifier} from 'pg'

import {toolVersion} from '../backup/child-process'
import {BackupMetadata, restoreSupport} from '../backup/metadata'
import {requireCodec} from '../compress/codec-streams'
import {codecOf} from '../compress/codecs'
import type {DatabaseConfig} from '../config'
import {connect, keepSessionForLocks, libpqEnvironment} from '../db/connection'
import {AbortedError, OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {
  CleanedLeftovers,
  isUnmarkedStaging,
  LeftoverMarker,
  RestoreDatabaseNames,
  cleanLeftovers,
  createStagingDatabase,
  databaseComment,
  dropDatabase,
  maintenanceDatabase,
  releaseRestoreLock,
  restoreDatabaseNames,
  swapDatabases,
  tryRestoreLock,
} from './database'
import {ArchiveRestoreOptions, requireArchiveOptions, requirePgRestoreFor} from './archive'
import {finishStaging} from './fidelity'
import {ImportProgress, ImportResult, importDump} from './import'
import {RestoreFidelityPlan, planRestoreFidelity} from './preflight'

export interface LogicalRestoreDependencies {
  /** Connection settings; the target database name comes from the options. */
  database: DatabaseConfig
  storage: StorageBackend
  logger: Logger
}

export interface LogicalRestoreOptions {
  backup: BackupMetadata
  targetDatabase: string
  /** Keep the replaced database as `names.previous` instead of dropping it (instant rollback). */
  keepPrevious?: boolean
  /** Create the staging database owned by this role and import as this role (SET ROLE via PGOPTIONS). */
  owner?: string
  /** Custom-format backups only: pg_restore --jobs/--table/--schema (src/restore/archive.ts). */
  archive?: ArchiveRestoreOptions
  signal?: AbortSignal
  onProgress?: (progress: ImportProgress) => void
  /** What the restore writes to local disk (a parallel restore's temporary file), said before it does. */
  onNotice?: (message: string) => void
  /** AGE_IDENTITY_FILE for an encrypted backup, already proven to open it (src/encrypt/age.ts prepareDecryption). */
  identityFile?: string
}

/** What preflight found out: everything the plan printed before the countdown needs. */
export interface LogicalRestorePlan {
  backup: BackupMetadata
  names: RestoreDatabaseNames
  targetExists: boolean
  targetOwner?: string
  keepPrevious: boolean
  owner?: string
  user: string
  superuser: boolean
  /** The local psql's version; for a custom-format backup, pg_restore's (checked to read the archive). */
  psqlVersion: string
  serverVersion: string
  /** pg_restore's options, checked against the backup and the target. */
  archive?: ArchiveRestoreOptions
  /** Leftovers of earlier restores found on the server (the restore drops those no restore is using). */
  leftovers: string[]
  /** Roles, privileges and database-level properties: preflight findings and what will be carried over (src/restore/preflight.ts). */
  fidelity: RestoreFidelityPlan
  identityFile?: string
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
  /** With --keep-previous: the name the replaced database is kept under. */
  previousDatabase: string | null
  terminatedSessions: number
  /** SQL bytes psql executed. */
  restoredBytes: number
  /** Leftover staging/replaced databases of earlier, crashed restores that this restore dropped. */
  cleanedLeftovers: string[]
  durationMs: number
}

const UNCHANGED = (target: string) => `database "${target}" was not changed`

/**
 * Preflight: everything that can be checked before a byte is streamed, each failure with one
 * clear message — the server answers, psql is installed, the user may create databases, may
 * rename (own) the target and terminate its sessions, the --owner role exists and may be assumed,
 * and the names dbb needs are free.
 */
export async function planLogicalRestore(database: DatabaseConfig, options: LogicalRestoreOptions): Promise<LogicalRestorePlan> {
  const {backup, targetDatabase: target} = options
  const unsupported = restoreSupport(backup)
  if (unsupported) throw new OperationError(unsupported)
  if (backup.type !== 'logical') throw new UsageError(`${backup.id} is a ${backup.type} backup, not a logical (SQL) dump`)
  if (backup.format !== 'plain' && backup.format !== 'custom') {
    throw new OperationError(`${backup.id} is in format ${backup.format}/${backup.compression}; this dbb restores plain SQL dumps and custom-format archives`)
  }

  // --jobs/--table/--schema on a plain dump: exit 2 before anything else is looked at.
  requireArchiveOptions(backup, options.archive, {name: target, exists: false})

  // A zstd dump on a Node without a zstd decoder needs the zstd program: exit 2 naming it, before anything is touched.
  await requireCodec(codecOf(backup), 'decompress')

  const names = restoreDatabaseNames(target)
  const refuse = (message: string) => new OperationError(`preflight: ${message}; nothing was changed`)
  // A custom archive is read by pg_restore, which must be at least as new as the pg_dump that wrote it.
  const psqlVersion = await (backup.format === 'custom' ? requirePgRestoreFor(backup) : toolVersion('psql')).catch((error: unknown) => {
    throw refuse(errorMessage(error))
  })
  const client = await connect(database, {database: maintenanceDatabase(target)}).catch((error: unknown) => {
    throw refuse(errorMessage(error))
  })
  try {
    // The permission, role and version checks are src/restore/preflight.ts's; what is the restore
    // engine's own (the names it needs) is checked here.
    const fidelity = await planRestoreFidelity(client, {backup, targetDatabase: target, psqlVersion: backup.format === 'custom' ? undefined : psqlVersion, ownerRole: options.owner})
    const problems = fidelity.preflight.problems.map((problem) => `${problem.message}${problem.fix ? ` (${problem.fix})` : ''}`)
    if (options.keepPrevious) {
      const taken = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [names.previous])
      if ((taken.rowCount ?? 0) > 0) problems.push(`--keep-previous: database "${names.previous}" already exists (a copy kept by an earlier restore?); drop or rename it first`)
    }

    if (problems.length > 0) throw refuse(problems.join('; '))
    const {facts} = fidelity.preflight
    // --table/--schema only into a database that does not exist: never a partial database swapped over a whole one.
    requireArchiveOptions(backup, options.archive, {name: target, exists: facts.targetExists})
    const leftovers = await client.query<{datname: string}>(`SELECT datname FROM pg_database WHERE datname ~ '_dbb_(staging|replaced)_[0-9a-f]{8}$' ORDER BY datname`)
    return {
      backup,
      names,
      targetExists: facts.targetExists,
      targetOwner: facts.targetOwner,
      keepPrevious: Boolean(options.keepPrevious),
      owner: options.owner,
      user: facts.user,
      superuser: facts.superuser,
      psqlVersion,
      serverVersion: facts.serverVersion,
      archive: options.archive,
      leftovers: leftovers.rows.map((row) => row.datname),
      fidelity,
      identityFile: options.identityFile,
    }
  } finally {
    await client.end().catch(() => {})
  }
}

/**
 * Restores a logical (pg_dump plain SQL, gzip) backup into `targetDatabase`. At every instant the
 * target is either exactly what it was or the complete restored database:
 *
 *   preflight → stage (lock, clean leftovers, create the staging database) → import (one pass:
 *   storage → sha256 → gunzip → psql into staging) → verify (psql exit 0, size and sha256 equal
 *   the sidecar's) → carry over (grants, escalation check, database properties) → swap (one transaction) → cleanup
 *   (drop the replaced database, or keep it as the previous copy).
 *
 * Any failure or kill before the swap's COMMIT leaves the target untouched; a staging database
 * left by a kill is dropped by the next restore.
 */
export async function restoreLogical(deps: LogicalRestoreDependencies, options: LogicalRestoreOptions): Promise<RestoreOutcome> {
  const plan = await planLogicalRestore(deps.database, options)
  return executeLogicalRestore(deps, plan, options)
}

export async function executeLogicalRestore(
  deps: LogicalRestoreDependencies,
  plan: LogicalRestorePlan,
  options: Pick<LogicalRestoreOptions, 'signal' | 'onProgress' | 'onNotice'>,
): Promise<RestoreOutcome> {
  const {database} = deps
  const {backup, names} = plan
  const started = Date.now()
  const log = deps.logger.child({backupId: backup.id, database: names.target})
  const {signal} = options
  const marker = (kind: LeftoverMarker['kind']): LeftoverMarker => ({kind, target: names.target, backupId: backup.id, startedAt: new Date(started).toISOString(), pid: process.pid})

  const session = await openRestoreSession(database, names.target)
  let stagingCreated = false
  try {
    const cleaned = await stage(deps, session, plan, marker('staging'))
    stagingCreated = true
    log.info({event: 'restore.staged', staging: names.staging, cleanedLeftovers: cleaned.dropped, keptLeftovers: cleaned.kept}, `importing into staging database ${names.staging}`)
    if (signal?.aborted) throw new AbortedError('restore interrupted')

    const imported = await importIntoStaging(deps, plan, options)
    verifyImport(plan, imported)
    for (const warning of imported.warnings) log.warn({event: 'restore.server_warning', warning}, warning)
    log.info({event: 'restore.verified', sha256: imported.sha256, restoredBytes: imported.restoredBytes}, 'import complete and sha256 matches; swapping')
    if (signal?.aborted) throw new AbortedError('restore interrupted')

    await carryOver(database, session, plan, log)
    const swapped = await swap(database, session, plan, marker('replaced'))
    stagingCreated = false
    log.info({event: 'restore.swapped', terminatedSessions: swapped.terminatedSessions, oldTargetNow: swapped.oldTargetNow ?? null}, `database ${names.target} is now the restored one`)

    await cleanup(session, plan, swapped.oldTargetNow, log)
    const durationMs = Date.now() - started
    log.info({event: 'restore.succeeded', restoredBytes: imported.restoredBytes, durationMs}, 'restore succeeded')
    return {
      id: backup.id,
      createdAt: backup.createdAt,
      sizeBytes: backup.sizeBytes,
      sha256: backup.sha256,
      host: database.host,
      port: database.port,
      database: names.target,
      replacedExisting: plan.targetExists,
      previousDatabase: plan.targetExists && plan.keepPrevious ? names.previous : null,
      terminatedSessions: swapped.terminatedSessions,
      restoredBytes: imported.restoredBytes,
      cleanedLeftovers: cleaned.dropped,
      durationMs,
    }
  } catch (error) {
    const dropped = stagingCreated ? await dropDatabase(session.client, names.staging).then(() => true, () => false) : true
    const leftover = dropped ? '' : `; the staging database "${names.staging}" could not be dropped and is dropped by the next restore`
    log.error({event: 'restore.failed', error: errorMessage(error)}, 'restore failed; target unchanged')
    if (error instanceof AbortedError || signal?.aborted) throw new AbortedError(`restore interrupted; ${UNCHANGED(names.target)}${leftover}`)
    if (error instanceof UsageError) throw error
    throw new OperationError(`restore failed: ${errorMessage(error)}\n${UNCHANGED(names.target)}${leftover}`, {cause: error})
  } finally {
    await session.close()
  }
}

interface RestoreSession {
  client: Client
  databaseName: string
  close(): Promise<void>
}

/** The session that holds this restore's advisory lock from before staging until the end (its death releases it). */
async function openRestoreSession(database: DatabaseConfig, target: string): Promise<RestoreSession> {
  const databaseName = maintenanceDatabase(target)
  const client = await connect(database, {database: databaseName}).catch((error: unknown) => {
    throw new OperationError(`${errorMessage(error)}; ${UNCHANGED(target)}`)
  })
  client.on('error', () => {})
  await keepSessionForLocks(client).catch(async (error: unknown) => {
    await client.end().catch(() => {})
    throw new OperationError(`${errorMessage(error)}; ${UNCHANGED(target)}`)
  })
  // A restore killed a moment ago holds the lock until its server session notices the closed connection: wait briefly.
  let locked = await tryRestoreLock(client, target)
  for (let attempt = 0; !locked && attempt < 20; attempt++) {
    await sleep(250)
    locked = await tryRestoreLock(client, target)
  }

  if (!locked) {
    await client.end().catch(() => {})
    throw new OperationError(`another restore into database "${target}" is running on this server; ${UNCHANGED(target)} by this one`)
  }

  return {
    client,
    databaseName,
    async close() {
      await releaseRestoreLock(client, target).catch(() => {})
      await client.end().catch(() => {})
    },
  }
}

/** Stage: drop what crashed restores left (never one in use), then create the marked staging database. */
async function stage(deps: LogicalRestoreDependencies, session: RestoreSession, plan: LogicalRestorePlan, marker: LeftoverMarker): Promise<CleanedLeftovers> {
  const cleaned = await cleanLeftovers(deps.database, session.client, session.databaseName)
  // This target's lock is held, so a database under this restore's own staging name that was
  // created with the staging connection limit and never got its marker is a killed restore's.
  if (await isUnmarkedStaging(session.client, plan.names.staging)) {
    await dropDatabase(session.client, plan.names.staging)
    cleaned.dropped.push(plan.names.staging)
  }

  const {rows} = await session.client.query('SELECT 1 FROM pg_database WHERE datname = $1', [plan.names.staging])
  if (rows.length > 0) {
    throw new OperationError(
      `database "${plan.names.staging}" exists but is not a staging database dbb can prove it made (no dbb marker comment); ` +
        `drop it if it is a leftover (DROP DATABASE ${JSON.stringify(plan.names.staging)}) and run the restore again`,
    )
  }

  await createStagingDatabase(session.client, plan.names.staging, {owner: plan.owner, marker}).catch(async (error: unknown) => {
    await dropDatabase(session.client, plan.names.staging).catch(() => {})
    throw new OperationError(`could not create the staging database "${plan.names.staging}": ${errorMessage(error)}`)
  })
  return cleaned
}

/** Import: the one pass over the dump, into the staging database, as --owner when given. */
async function importIntoStaging(deps: LogicalRestoreDependencies, plan: LogicalRestorePlan, options: Pick<LogicalRestoreOptions, 'signal' | 'onProgress' | 'onNotice'>): Promise<ImportResult> {
  const base = libpqEnvironment(deps.database, {database: plan.names.staging})
  // `-c role=…` at connection start is SET ROLE for the whole psql session: every object it creates belongs to that role.
  const env = plan.owner === undefined ? base : {...base, PGOPTIONS: `-c role=${plan.owner.replaceAll('\\', '\\\\').replaceAll(' ', '\\ ')}`}
  return importDump({storage: deps.storage, backup: plan.backup, env, signal: options.signal, onProgress: options.onProgress, archive: plan.archive, onNotice: options.onNotice, identityFile: plan.identityFile})
}

/** Verify: psql exited 0 (importDump throws otherwise), and what was read is byte for byte what the sidecar describes. */
function verifyImport(plan: LogicalRestorePlan, imported: ImportResult): void {
  if (imported.sizeBytes !== plan.backup.sizeBytes || imported.sha256 !== plan.backup.sha256) {
    throw new OperationError(`integrity check failed for ${plan.backup.id}: read ${imported.sizeBytes} bytes with sha256 ${imported.sha256}; the stored dump is damaged or was altered`)
  }
}

/**
 * Carry over, between import and swap: recorded EXECUTE grants back for no-owner dumps, the
 * escalation check (a throw: nothing is swapped), then the database-level properties (owner,
 * ACL, settings, connection limit) onto the staging database — keyed by its oid, so they survive
 * the rename. The comment is set by the swap itself: until then it is the staging marker.
 */
async function carryOver(database: DatabaseConfig, session: RestoreSession, plan: LogicalRestorePlan, log: Logger): Promise<void> {
  const stagingClient = await connect(database, {database: plan.names.staging})
  stagingClient.on('error', () => {})
  try {
    const report = await finishStaging({
      stagingClient,
      maintenanceClient: session.client,
      stagingName: plan.names.staging,
      backup: plan.backup,
      // --owner makes that role the owner of the new database (createStagingDatabase); the rest carries over.
      profile: plan.owner !== undefined && plan.fidelity.profile ? {...plan.fidelity.profile, owner: plan.owner} : plan.fidelity.profile,
      applyOptions: {skipComment: true},
    })
    for (const part of [report.functionPrivileges, report.profile]) {
      for (const {item, reason} of part?.skipped ?? []) log.warn({event: 'restore.not_carried_over', item, reason}, `not carried over: ${item} (${reason})`)
    }

    if (report.profile) log.info({event: 'restore.carried_over', items: report.profile.applied, from: plan.fidelity.profileSource}, 'database properties carried over')
    // Without a profile (a backup older than their recording, into a new name) the staging limit must not stay.
    else await session.client.query(`ALTER DATABASE ${escapeIdentifier(plan.names.staging)} CONNECTION LIMIT -1`)
  } finally {
    await stagingClient.end().catch(() => {})
  }
}

/** Swap: one transaction, on its own session, while the restore session keeps terminating the target's sessions. */
async function swap(database: DatabaseConfig, session: RestoreSession, plan: LogicalRestorePlan, replacedMarker: LeftoverMarker) {
  const swapper = await connect(database, {database: session.databaseName})
  swapper.on('error', () => {})
  try {
    // The comment the restored database carries: the profile's (old target or backup), else the old target's.
    const profile = plan.fidelity.profile
    const targetComment = profile ? profile.comment : plan.targetExists ? await databaseComment(swapper, plan.names.target) : null
    return await swapDatabases(swapper, session.client, {names: plan.names, targetExists: plan.targetExists, keepPrevious: plan.keepPrevious, targetComment, replacedMarker})
  } finally {
    await swapper.end().catch(() => {})
  }
}

/** Cleanup: drop the replaced database (its marker lets the next restore finish the job if this fails or dbb dies here). */
async function cleanup(session: RestoreSession, plan: LogicalRestorePlan, oldTargetNow: string | undefined, log: Logger): Promise<void> {
  if (oldTargetNow === undefined || plan.keepPrevious) return
  await dropDatabase(session.client, oldTargetNow).catch((error: unknown) => {
    log.warn({event: 'restore.cleanup_failed', database: oldTargetNow, error: errorMessage(error)}, `the replaced database ${oldTargetNow} could not be dropped; the next restore drops it`)
  })
}
