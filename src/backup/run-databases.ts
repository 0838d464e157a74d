import type {DatabasesConfig} from '../config'
import {withClient} from '../db/connection'
import {AbortedError, EXIT_FAILURE, EXIT_PARTIAL_FAILURE, OperationError, errorMessage} from '../errors'
import {explainGlobalsFailure, runGlobalsBackup} from './globals'
import type {BackupMetadata} from './metadata'
import {MAX_PREFIX_LENGTH, databasePrefix} from './naming'
import {BackupDependencies, BackupOptions, BackupOutcome, runLogicalBackup} from './run-backup'

/** One database's (or the globals') part of a run. */
export interface RunPartResult {
  /** The database, or null for the cluster globals. */
  database: string | null
  status: 'succeeded' | 'failed'
  /** The stored backup; null when it failed (nothing of it is listed). */
  backupId: string | null
  sizeBytes: number | null
  error: string | null
  /** Retention failed after this backup succeeded; the backup stands. */
  pruneError: string | null
}

export interface MultiBackupOutcome {
  /** succeeded: every part; partial: some failed, the others are stored; failed: none stored. */
  status: 'succeeded' | 'partial' | 'failed'
  /** 0, EXIT_PARTIAL_FAILURE (3) or EXIT_FAILURE (1); what `backup run` exits with. */
  exitCode: number
  globals: RunPartResult | null
  databases: RunPartResult[]
}

export interface MultiBackupHooks {
  /** Called as each part starts and ends (the job of `dbb serve` shows them while it runs). */
  onPart?: (results: MultiBackupOutcome) => void
  /** Each backup stored (the globals', each database's), with its sidecar metadata. */
  onStored?: (metadata: BackupMetadata) => void
}

/**
 * One run of DB_NAMES: the globals first (a restore onto a new server needs the roles before any
 * database), then each database in turn, each a complete backup of its own (storeBackup: claimed
 * id, verified, sidecar last, retention for its own prefix). A failure of one part is recorded and
 * the next one runs; only an interruption (Ctrl-C, SIGTERM, shutdown) stops the run. A part that
 * failed left nothing listed: storeBackup removes what it wrote, and its unlisted leftovers (a
 * crash) are orphans that prune removes.
 */
export async function runDatabaseBackups(
  deps: BackupDependencies,
  settings: DatabasesConfig,
  options: BackupOptions,
  hooks: MultiBackupHooks = {},
): Promise<MultiBackupOutcome> {
  const outcome: MultiBackupOutcome = {status: 'succeeded', exitCode: 0, globals: null, databases: []}
  const plan = await planDatabases(deps, settings)
  const log = deps.logger
  log.info({event: 'backup.run_started', databases: plan.map(({database}) => database), globals: settings.globals}, `backing up ${plan.length} database(s)${settings.globals ? ' and the cluster globals' : ''}`)

  if (settings.globals) {
    outcome.globals = await part(null, () => runGlobalsBackup(deps, options, {noRolePasswords: settings.noRolePasswords}), options, hooks, explainGlobalsFailure)
    hooks.onPart?.(outcome)
  }

  for (const {database, problem} of plan) {
    const result = problem
      ? failed(database, problem)
      : await part(database, () => runLogicalBackup({...deps, database: {...deps.database, database}, namePrefix: databasePrefix(deps.namePrefix, database)}, options), options, hooks)
    if (problem) log.error({event: 'backup.failed', database, error: problem}, `backup of ${database} failed`)
    outcome.databases.push(result)
    hooks.onPart?.(outcome)
  }

  const parts = [...(outcome.globals ? [outcome.globals] : []), ...outcome.databases]
  const failures = parts.filter((result) => result.status === 'failed').length
  outcome.status = failures === 0 ? 'succeeded' : failures < parts.length ? 'partial' : 'failed'
  outcome.exitCode = failures === 0 ? 0 : failures < parts.length ? EXIT_PARTIAL_FAILURE : EXIT_FAILURE
  const summary = describeRun(outcome)
  if (failures === 0) log.info({event: 'backup.run_succeeded', databases: outcome.databases.length}, summary)
  else log.error({event: 'backup.run_failed', status: outcome.status, exitCode: outcome.exitCode, failed: parts.filter((r) => r.status === 'failed').map((r) => r.database ?? 'globals')}, summary)
  return outcome
}

/** One line: which parts failed and why, or that all succeeded. */
export function describeRun(outcome: MultiBackupOutcome): string {
  const parts = [...(outcome.globals ? [outcome.globals] : []), ...outcome.databases]
  const failures = parts.filter((result) => result.status === 'failed')
  if (failures.length === 0) return `all ${parts.length} backup(s) of this run succeeded`
  return `${failures.length} of ${parts.length} backup(s) of this run failed (the others are stored): ${failures.map((result) => `${result.database === null ? 'globals' : `database "${result.database}"`}: ${result.error}`).join('; ')}`
}

async function part(
  database: string | null,
  work: () => Promise<BackupOutcome>,
  options: BackupOptions,
  hooks: MultiBackupHooks,
  explain: (message: string) => string = (message) => message,
): Promise<RunPartResult> {
  if (options.signal?.aborted) throw new AbortedError('backup run interrupted')
  try {
    const {metadata, pruneError} = await work()
    hooks.onStored?.(metadata)
    return {database, status: 'succeeded', backupId: metadata.id, sizeBytes: metadata.sizeBytes, error: null, pruneError: pruneError ?? null}
  } catch (error) {
    // An interruption ends the run (what this part wrote is already removed); anything else is this part's failure.
    if (options.signal?.aborted || error instanceof AbortedError) throw error
    return failed(database, explain(errorMessage(error)))
  }
}

function failed(database: string | null, error: string): RunPartResult {
  return {database, status: 'failed', backupId: null, sizeBytes: null, error, pruneError: null}
}

interface PlannedDatabase {
  database: string
  /** Why this database cannot be backed up, found before anything runs; its part fails with it. */
  problem?: string
}

/**
 * The databases of this run. `all`: every database that accepts connections, is no template and
 * that DB_USER may CONNECT to, `postgres` included (as pg_dumpall does), by name. A named database
 * that does not exist fails its own part, naming the server; one that cannot connect fails when its
 * pg_dump starts. A connection failure here fails the whole run (nothing could be backed up).
 */
async function planDatabases(deps: BackupDependencies, settings: DatabasesConfig): Promise<PlannedDatabase[]> {
  const where = `${deps.database.host}:${deps.database.port}`
  const rows = await withClient(deps.database, async (client) => {
    const result = await client.query<{datname: string; connectable: boolean}>(
      `SELECT datname, datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT') AS connectable FROM pg_database ORDER BY datname`,
    )
    return result.rows
  }).catch((error: unknown) => {
    throw new OperationError(`cannot list the databases to back up: ${errorMessage(error)}`)
  })
  const names = settings.names === 'all' || settings.names === undefined ? rows.filter((row) => row.connectable).map((row) => row.datname) : settings.names
  const existing = new Set(rows.map((row) => row.datname))
  return names.map((database) => {
    if (!existing.has(database)) return {database, problem: `database "${database}" does not exist on ${where} (DB_NAMES)`}
    if (databasePrefix(deps.namePrefix, database).length > MAX_PREFIX_LENGTH) {
      return {database, problem: `database "${database}" has a name too long to encode in backup ids (BACKUP_NAME_PREFIX plus the encoded name exceed ${MAX_PREFIX_LENGTH} characters); use a shorter BACKUP_NAME_PREFIX`}
    }

    return {database}
  })
}
