import {Server, createServer} from 'node:http'
import type {AddressInfo} from 'node:net'

import {toolVersion} from '../backup/child-process'
import {BackupMetadata, listBackups} from '../backup/metadata'
import {runLogicalBackup} from '../backup/run-backup'
import {describeRun, runDatabaseBackups} from '../backup/run-databases'
import {explainGlobalsFailure, runGlobalsBackup} from '../backup/globals'
import type {Config} from '../config'
import {OperationError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import {backupFinishedEvents, backupStarted, drillFinished} from '../notify/backup-events'
import {describeFailure} from '../drill/run-drill'
import type {Notifier} from '../notify/notifier'
import {createBackupProgress} from '../progress'
import type {PhysicalDrillDependencies} from '../drill/physical'
import type {StorageBackend} from '../storage/contract'
import {createApp} from './app'
import type {TokenGuessLimit} from './middleware/auth'
import {JobRegistry, JobSkippedError, JobWork, StartResult} from './jobs'
import {JobLock, slotTaken} from './job-lock'
import {DrillJobs} from './drills'
import {DrillResult, readDrillResult, scanWithDrills} from '../drill/result'
import {drillServer} from '../config'
import {HealthReport, HealthTargets, runHealthChecks} from './health'
import {ServiceMetrics} from './metrics'
import type {Route} from './routes/route'
import {Scheduler, SchedulerClock} from './scheduler'

export type ServiceConfig = Pick<Config, 'database' | 'namePrefix' | 'retention' | 'server' | 'schedule'> & Partial<Pick<Config, 'compression' | 'logicalDump' | 'databases' | 'drill' | 'encryption' | 'decryption'>>

export interface ServiceOptions {
  config: ServiceConfig
  storage: StorageBackend
  logger: Logger
  clock?: SchedulerClock
  /** Per-check limit of /health. */
  healthTimeoutMs?: number
  /** Wrong API tokens one address may send before it is locked out (default TOKEN_GUESS_LIMIT, middleware/auth.ts). */
  tokenGuessLimit?: TokenGuessLimit
  /** What a physical drill needs from the command (restore_command, the storage settings for it); without it, serve drills logical backups only. */
  physicalDrill?: Pick<PhysicalDrillDependencies, 'restoreCommand' | 'storageEnvironment'>
  /** Tells people about each backup job (started, succeeded, failed; retention refusals) and counts deliveries in /metrics. */
  notifier?: Notifier
}

export interface RunningService {
  /** e.g. http://127.0.0.1:8080 */
  url: string
  jobs: JobRegistry
  drills: DrillJobs
  scheduler: Scheduler
  metrics: ServiceMetrics
  /** The /health checks run once at start; resolves when they are done (and any failure logged). */
  startupChecks: Promise<HealthReport>
  /** The routes served, as declared (method, path, auth). */
  routes: readonly Route[]
  /** Graceful stop; idempotent. Resolves when everything is closed. */
  shutdown(reason: string): Promise<void>
  /** Skips the rest of the grace period: aborts the backup in flight now. */
  abortNow(reason: string): void
}

// After the grace period the backup is aborted; its cleanup (killing pg_dump, removing what was
// written) is quick, but is bounded too so shutdown always ends.
const ABORT_CLEANUP_LIMIT_MS = 15_000

/**
 * `dbb serve`: the REST API and the scheduler around one job registry, so the scheduler and the
 * API share the single-flight lock and every backup goes through runLogicalBackup, the same
 * runner as `dbb backup run`.
 */
export async function startService(options: ServiceOptions): Promise<RunningService> {
  const {config, storage, logger} = options
  const pgDumpVersion = await toolVersion('pg_dump')
  const sidecarCache = new Map<string, BackupMetadata>()
  const newest = await newestBackup(storage, config.namePrefix, sidecarCache, logger, config.databases?.names !== undefined)
  const metrics = new ServiceMetrics()
  const {notifier} = options
  notifier?.attachMetrics(metrics.registry)
  metrics.recordExistingBackup(newest)

  // Replicas (issue 19): every job holds the database's job lock while it runs (src/server/job-lock.ts).
  const jobLock = new JobLock(config.database, logger.child({component: 'job-lock'}))
  let scheduler: Scheduler | undefined
  const work: JobWork = async ({job, signal, logger: jobLogger, idClaimed, reportRun, lease: given}) => {
    const onWait = () => jobLogger.info({event: 'job_lock.waiting'}, 'another dbb replica (or a drill) holds the job lock: waiting for it')
    const lease = given ?? (await jobLock.acquire(signal, onWait))
    try {
      if (job.triggeredBy === 'scheduler') {
        // While this replica waited, another may have taken this slot's backup.
        // DB_NAMES: each database (and the globals) has its own prefix `<prefix>_<name>`; any of them marks the slot.
        const [newest] =
          config.databases?.names === undefined
            ? await listBackups(storage, {prefix: config.namePrefix, type: 'logical', cache: sidecarCache})
            : (await listBackups(storage, {cache: sidecarCache})).filter((backup) => backup.id.startsWith(`${config.namePrefix}_`))
        if (slotTaken(config.schedule, newest, Date.parse(job.startedAt ?? new Date().toISOString()))) {
          scheduler?.backupSucceeded(new Date(Date.parse(newest!.createdAt) + newest!.durationMs))
          throw new JobSkippedError(`this slot's backup was already taken (${newest!.id}, by another replica)`)
        }
      }

      return await backUp({job, signal, logger: jobLogger, idClaimed, reportRun})
    } finally {
      await lease.release()
    }
  }

  const backUp: JobWork = async ({job, signal, logger: jobLogger, idClaimed, reportRun}) => {
    const progress = createBackupProgress(jobLogger, {interactive: false})
    const deps = {database: config.database, storage, namePrefix: config.namePrefix, retention: config.retention, compression: config.compression, logicalDump: config.logicalDump, encryption: config.encryption, logger: jobLogger}
    const options = {
      triggeredBy: job.triggeredBy,
      signal,
      onIdClaimed: idClaimed,
      onProgress: progress.onProgress,
    }
    if (config.databases?.names === undefined) {
      if (!config.databases?.globals) return runLogicalBackup(deps, options)
      // DB_NAME alone with BACKUP_GLOBALS=true: the globals first, as `backup run` does; their failure fails the job once the dump is stored.
      const globalsError = await runGlobalsBackup(deps, options, config.databases).then(
        () => undefined,
        (error: unknown) => explainGlobalsFailure(errorMessage(error)),
      )
      const outcome = await runLogicalBackup(deps, options)
      if (globalsError !== undefined) throw new OperationError(`${outcome.metadata.id} is stored, but the globals (pg_dumpall --globals-only) could not be: ${globalsError}`)
      return outcome
    }

    // DB_NAMES: one job for the whole run, its per-database results on the job; any part failing fails the job.
    let newest: BackupMetadata | undefined
    const outcome = await runDatabaseBackups(deps, config.databases, options, {onPart: (run) => reportRun?.(run), onStored: (metadata) => (newest = metadata)})
    reportRun?.(outcome)
    if (outcome.exitCode !== 0 || !newest) throw new OperationError(newest ? describeRun(outcome) : 'DB_NAMES matched no database to back up')
    return {metadata: newest}
  }

  const jobs = new JobRegistry({
    work,
    logger,
    onStart: (job) => {
      metrics.jobStarted()
      notifier?.emit(backupStarted({type: 'logical', location: storage.location, triggeredBy: job.triggeredBy}))
    },
    onFinish: (job, outcome) => {
      const facts = {type: 'logical' as const, location: storage.location, triggeredBy: job.triggeredBy}
      // skipped: another replica took this slot's backup; nothing failed, nothing to tell.
      if (job.status !== 'skipped') for (const event of backupFinishedEvents(facts, {outcome, error: job.errorMessage ?? undefined, backupId: job.backupId})) notifier?.emit(event)
      metrics.jobFinished(job, outcome?.metadata)
      if (job.status === 'succeeded' && job.finishedAt) scheduler?.backupSucceeded(new Date(job.finishedAt))
      if (job.status === 'failed' && job.finishedAt) scheduler?.backupFailed(new Date(job.finishedAt))
    },
  })
  scheduler = new Scheduler({
    schedule: config.schedule,
    trigger: () => jobs.start('scheduler'),
    logger: logger.child({component: 'scheduler'}),
    clock: options.clock,
    lastSuccessAt: newest ? new Date(Date.parse(newest.createdAt) + newest.durationMs) : undefined,
  })

  const drills = startDrills({config, storage, logger, jobLock, metrics, clock: options.clock, notifier, physical: options.physicalDrill})

  let shuttingDown = false
  const app = createApp({
    apiToken: config.server.apiToken,
    storage,
    database: config.database,
    namePrefix: config.namePrefix,
    severalDatabases: config.databases?.names !== undefined,
    retention: config.retention,
    jobs,
    metrics,
    logger,
    sidecarCache,
    pgDumpVersion,
    schedule: scheduler,
    isShuttingDown: () => shuttingDown,
    healthTimeoutMs: options.healthTimeoutMs,
    tokenGuessLimit: options.tokenGuessLimit,
    drills: drills.jobs,
    jobLock,
  })
  const server = createServer(app.callback())
  const address = await listen(server, config.server.port, config.server.host)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  logger.info({event: 'server.listening', url, storage: storage.location, pgDumpVersion}, `listening on ${url}`)
  scheduler.start()
  await drills.start()
  // Not awaited: an unreachable host takes the whole check timeout, and the service runs either way.
  const startupChecks = warnAboutFailedChecks({database: config.database, storage, timeoutMs: options.healthTimeoutMs}, logger)

  let stopped: Promise<void> | undefined
  const shutdown = (reason: string): Promise<void> => {
    stopped ??= (async () => {
      shuttingDown = true
      const graceMs = config.server.shutdownGraceMs
      const inFlight = jobs.inFlight()
      logger.info({event: 'shutdown.started', reason, graceMs, jobInFlight: inFlight?.jobId ?? null}, `shutting down (${reason})`)
      scheduler?.stop()
      drills.stop()
      // Stop accepting connections; idle keep-alive connections are closed now, busy ones when done.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      if (!(await jobs.whenIdle(graceMs))) {
        logger.warn({event: 'shutdown.abort', jobId: jobs.inFlight()?.jobId, graceMs}, 'grace period over: aborting the backup in flight')
        jobs.abort('the service is shutting down')
        drills.jobs.abort('the service is shutting down')
        await jobs.whenIdle(ABORT_CLEANUP_LIMIT_MS)
      }

      await drills.jobs.whenIdle()
      // Downloads still streaming after the grace period are cut off.
      server.closeAllConnections()
      await closed
      await storage.close?.().catch((error: unknown) => logger.warn({event: 'storage.close_failed', error: errorMessage(error)}))
      logger.info({event: 'shutdown.complete'}, 'stopped')
    })()
    return stopped
  }

  const abortNow = (reason: string) => {
    jobs.abort(reason)
    drills.jobs.abort(reason)
  }

  return {url, jobs, drills: drills.jobs, scheduler, metrics, routes: app.routes, startupChecks, shutdown, abortNow}
}

/**
 * Restore drills in `dbb serve` (issue 19): the drill jobs (API and schedule), their scheduler when
 * DRILL_INTERVAL or DRILL_SCHEDULE is set, and the drill metrics seeded from storage.
 */
function startDrills(context: {
  config: ServiceConfig
  storage: StorageBackend
  logger: Logger
  jobLock: JobLock
  metrics: ServiceMetrics
  clock?: SchedulerClock
  notifier?: Notifier
  physical?: ServiceOptions['physicalDrill']
}) {
  const {config, storage, logger, metrics, notifier} = context
  let drillScheduler: Scheduler | undefined
  const jobs = new DrillJobs({
    drill: {server: drillServer(config.database, config.drill), storage, namePrefix: config.namePrefix, identityFile: config.decryption?.identityFile},
    physical: context.physical && {
      ...context.physical,
      storage,
      namePrefix: config.namePrefix,
      osUser: config.drill?.osUser ?? 'postgres',
      knownRole: config.database.user,
    },
    latestType: config.drill?.type,
    lock: context.jobLock,
    logger,
    onFinish: (job) => {
      if (job.status === 'skipped') return
      metrics.drillFinished(job.result ?? undefined)
      // A drill that could not run is worth a human as much as one that failed.
      const reason = job.result ? (job.result.status === 'passed' ? undefined : describeFailure(job.result)) : (job.errorMessage ?? 'the drill could not run')
      notifier?.emit(drillFinished({backupId: job.backupId ?? job.reference, location: storage.location, passed: job.status === 'passed', reason, durationMs: job.result?.restoreMs}))
      if (job.finishedAt && job.status === 'error') drillScheduler?.backupFailed(new Date(job.finishedAt))
      else if (job.finishedAt) drillScheduler?.backupSucceeded(new Date(job.finishedAt))
    },
  })
  return {
    jobs,
    async start() {
      const last = await lastDrill(storage, config.namePrefix).catch(() => undefined)
      metrics.recordDrill(last)
      const schedule = config.drill?.schedule
      if (!schedule) return
      drillScheduler = new Scheduler({
        schedule,
        // The scheduler reads only `started` and the job id of what it gets back.
        trigger: () => jobs.start('scheduler') as unknown as StartResult,
        logger: logger.child({component: 'drill-scheduler'}),
        what: 'drill',
        clock: context.clock,
        lastSuccessAt: last ? new Date(last.finishedAt) : undefined,
      })
      drillScheduler.start()
    },
    stop() {
      drillScheduler?.stop()
    },
  }
}

/** The most recently finished drill of any logical backup with the prefix. */
async function lastDrill(storage: StorageBackend, prefix: string): Promise<DrillResult | undefined> {
  const {listing} = await scanWithDrills(storage, {prefix, type: 'logical'})
  const results = await Promise.all(listing.backups.slice(0, 50).map((backup) => readDrillResult(storage, backup.id).catch(() => undefined)))
  return results.filter((result): result is DrillResult => result !== undefined).sort((a, b) => b.finishedAt.localeCompare(a.finishedAt))[0]
}

async function newestBackup(
  storage: StorageBackend,
  prefix: string,
  cache: Map<string, BackupMetadata>,
  logger: Logger,
  severalDatabases = false,
): Promise<BackupMetadata | undefined> {
  try {
    // DB_NAMES: each database has its own prefix `<prefix>_<name>`; the scheduler counts from the newest of any.
    if (severalDatabases) return (await listBackups(storage, {cache})).find((backup) => backup.id.startsWith(`${prefix}_`))
    const [newest] = await listBackups(storage, {prefix, cache})
    return newest
  } catch (error) {
    // The storage may come up after the sidecar (a mount, a bucket being created): start anyway,
    // /health reports it, and the first backup will say what is wrong.
    logger.warn({event: 'storage.list_failed', error: errorMessage(error)}, 'could not list existing backups at start')
    return undefined
  }
}

/**
 * The /health checks, once at start: a wrong password or an unreachable bucket is logged as a
 * warning at once instead of surfacing only on the first probe or the first backup. The service
 * still starts (the database may come up after its sidecar).
 */
async function warnAboutFailedChecks(targets: HealthTargets, logger: Logger): Promise<HealthReport> {
  const report = await runHealthChecks(targets)
  for (const [name, result] of Object.entries(report.checks)) {
    if (result.ok) continue
    logger.warn(
      {event: 'startup.check_failed', check: name, error: result.error},
      `${name} check failed at start: ${result.error} (the service runs; GET /health reports it until it is fixed)`,
    )
  }

  if (report.healthy) logger.info({event: 'startup.checks_passed'}, 'PostgreSQL and storage are reachable')
  return report
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const hint = error.code === 'EADDRINUSE' ? ` (port ${port} is in use; set HTTP_PORT)` : ''
      reject(new Error(`cannot listen on ${host}:${port}: ${error.code ?? error.message}${hint}`))
    }

    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    })
  })
}
