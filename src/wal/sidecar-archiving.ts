import {runBaseBackup} from '../backup/base-backup'
import {listBackups} from '../backup/metadata'
import {describeFailures, logicalBackupIntervalMs, runChecks} from '../check/checks'
import type {Config, Section} from '../config'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import {backupFinishedEvents, backupStarted} from '../notify/backup-events'
import {AlertState, Notifier} from '../notify/notifier'
import {JobLock, slotTaken} from '../server/job-lock'
import {JobRegistry, JobSkippedError} from '../server/jobs'
import {Scheduler, SchedulerClock, systemClock} from '../server/scheduler'
import type {StorageBackend} from '../storage/contract'
import {WalStreamer, defaultSpoolDir} from './streamer'

export type ArchivingServiceConfig = Pick<
  Config,
  'database' | 'namePrefix' | 'retention' | 'schedule' | 'baseBackup' | 'archiving' | 'walStreaming' | 'check' | 'notify'
> &
  Partial<Pick<Config, 'compression' | 'encryption'>>

export interface ArchivingService {
  streamer?: WalStreamer
  /** Base backup jobs (their own single-flight lock, independent of logical backups). */
  baseBackups?: {jobs: JobRegistry; scheduler: Scheduler}
  /** Runs the staleness checks now (and notifies on a change); what CHECK_INTERVAL triggers. */
  checkNow(): Promise<void>
  /** Stops the schedules, lets a base backup in flight finish within graceMs (else aborts it), stops streaming after a last upload. */
  stop(graceMs?: number): Promise<void>
}

/**
 * The continuous-archiving parts of `dbb serve`, each off unless configured: WAL streaming
 * (WAL_STREAMING=true), scheduled base backups (BASE_BACKUP_INTERVAL or BASE_BACKUP_SCHEDULE),
 * scheduled checks (CHECK_INTERVAL), and their notifications (src/notify): a base backup's outcome,
 * a failing check and stalled WAL archiving (once per change of state, then every
 * NOTIFY_REMINDER_INTERVAL while it lasts).
 */
export async function startArchivingService(options: {
  config: ArchivingServiceConfig
  storage: StorageBackend
  logger: Logger
  clock?: SchedulerClock
  /** Default: one built from config.notify. */
  notifier?: Notifier
}): Promise<ArchivingService> {
  const {config, storage} = options
  const logger = options.logger.child({component: 'archiving'})
  const clock = options.clock ?? systemClock
  const notifier = options.notifier ?? new Notifier(config.notify, logger)
  // The WAL age has its own alert (wal.stalled); check.failed covers the other checks, so one stall is told once.
  const walAlert = new AlertState(config.notify.reminderMs)
  const checksAlert = new AlertState(config.notify.reminderMs)

  let streamer: WalStreamer | undefined
  if (config.walStreaming.enabled) {
    streamer = new WalStreamer({
      database: config.database,
      storage,
      slot: config.walStreaming.slot,
      spoolDir: config.walStreaming.spoolDir ?? defaultSpoolDir(config.walStreaming.slot),
      logger,
      // Replicas: one streams, the others stand by and take over when its session (and lock) ends.
      lock: new JobLock(config.database, logger.child({component: 'job-lock'}), 'wal-stream'),
      encryptTo: config.encryption?.recipients,
    })
    await streamer.start()
  }

  let baseBackups: ArchivingService['baseBackups']
  if (config.archiving.baseBackupSchedule) {
    const schedule = config.archiving.baseBackupSchedule
    // Replicas (issue 19): one base backup per slot across every `dbb serve` of this cluster (src/server/job-lock.ts).
    const lock = new JobLock(config.database, logger.child({component: 'job-lock'}), 'base-backup')
    const jobs = new JobRegistry({
      logger,
      work: async ({job, signal, logger: jobLogger}) => {
        const onWait = () => jobLogger.info({event: 'job_lock.waiting'}, 'another dbb replica is taking a base backup: waiting for it')
        const lease = await lock.acquire(signal, onWait)
        try {
          if (job.triggeredBy === 'scheduler') {
            const [newest] = await listBackups(storage, {prefix: config.namePrefix, type: 'base'})
            if (slotTaken(schedule, newest, Date.parse(job.startedAt ?? new Date().toISOString()))) {
              scheduler.backupSucceeded(new Date(Date.parse(newest!.createdAt) + newest!.durationMs))
              throw new JobSkippedError(`this slot's base backup was already taken (${newest!.id}, by another replica)`)
            }
          }

          return await runBaseBackup(
            {database: config.database, storage, namePrefix: config.namePrefix, retention: config.retention, logger: jobLogger, baseBackup: config.baseBackup, compression: config.compression, encryption: config.encryption},
            {triggeredBy: job.triggeredBy, signal},
          )
        } finally {
          await lease.release()
        }
      },
      onStart: (job) => notifier.emit(backupStarted({type: 'base', location: storage.location, triggeredBy: job.triggeredBy})),
      onFinish: (job, outcome) => {
        if (job.status === 'succeeded' && job.finishedAt) scheduler.backupSucceeded(new Date(job.finishedAt))
        if (job.status === 'failed' && job.finishedAt) scheduler.backupFailed(new Date(job.finishedAt))
        // skipped: another replica took this slot's base backup; nothing failed, nothing to tell.
        if (job.status === 'skipped') return
        const facts = {type: 'base' as const, location: storage.location, triggeredBy: job.triggeredBy}
        for (const event of backupFinishedEvents(facts, {outcome, error: job.errorMessage ?? undefined, backupId: job.backupId})) notifier.emit(event)
      },
    })
    const [newest] = await listBackups(storage, {prefix: config.namePrefix, type: 'base'}).catch(() => [])
    const scheduler = new Scheduler({
      schedule,
      trigger: () => jobs.start('scheduler'),
      logger: logger.child({schedule: 'base-backup'}),
      clock,
      lastSuccessAt: newest ? new Date(Date.parse(newest.createdAt) + newest.durationMs) : undefined,
    })
    scheduler.start()
    baseBackups = {jobs, scheduler}
  }

  const checkNow = async () => {
    try {
      const report = await runChecks(storage, {
        prefix: config.namePrefix,
        config: config.check,
        logicalIntervalMs: logicalBackupIntervalMs(config.schedule),
        // This server takes base backups or streams WAL: both are expected before the first one is stored.
        pitrConfigured: config.archiving.baseBackupSchedule !== undefined || config.walStreaming.enabled,
      })
      const wal = report.checks.find((check) => check.name === 'wal')
      noteWal(wal?.status === 'fail' ? wal.message : undefined, report.location)
      const failures = describeFailures({...report, checks: report.checks.filter((check) => check.name !== 'wal')})
      if (report.ok) logger.info({event: 'check.passed'}, 'backup check passed')
      else logger.warn({event: 'check.failed', failures: describeFailures(report)}, `backup check failed: ${describeFailures(report).join('; ')}`)
      noteChecks(failures.length > 0 ? failures.join('; ') : undefined, report.location)
    } catch (error) {
      logger.error({event: 'check.error', error: errorMessage(error)}, 'backup check could not run')
      noteChecks(`the check could not run: ${errorMessage(error)}`, storage.location)
    }
  }

  /** wal.stalled on the change to failing, again every NOTIFY_REMINDER_INTERVAL, wal.recovered when it passes again. */
  const noteWal = (problem: string | undefined, location: string) => {
    const change = walAlert.update(problem !== undefined, clock.now())
    if (change === 'recovered') notifier.emit({kind: 'wal.recovered', summary: `WAL archiving on ${location} is current again`, details: {location}})
    else if (change) {
      const prefix = change === 'reminder' ? 'still: ' : ''
      notifier.emit({kind: 'wal.stalled', summary: `${prefix}WAL archiving stalled on ${location}: ${problem}`, details: {location, error: problem ?? null, reminder: change === 'reminder'}})
    }
  }

  const noteChecks = (problem: string | undefined, location: string) => {
    const change = checksAlert.update(problem !== undefined, clock.now())
    if (change === 'recovered') notifier.emit({kind: 'check.recovered', summary: `dbb check passes again for ${location}`, details: {location}})
    else if (change) {
      const prefix = change === 'reminder' ? 'still: ' : ''
      notifier.emit({kind: 'check.failed', summary: `${prefix}dbb check failed for ${location}: ${problem}`, details: {location, failures: problem ?? null, reminder: change === 'reminder'}})
    }
  }

  let cancelCheck: (() => void) | undefined
  let stopped = false
  const {checkIntervalMs} = config.archiving
  if (checkIntervalMs !== undefined) {
    const arm = () => {
      cancelCheck = clock.setTimer(() => void checkNow().finally(() => !stopped && arm()), checkIntervalMs)
    }

    arm()
  }

  return {
    streamer,
    baseBackups,
    checkNow,
    async stop(graceMs = 30_000) {
      stopped = true
      cancelCheck?.()
      baseBackups?.scheduler.stop()
      if (baseBackups && !(await baseBackups.jobs.whenIdle(graceMs))) {
        baseBackups.jobs.abort('the service is shutting down')
        await baseBackups.jobs.whenIdle(15_000)
      }

      await streamer?.stop()
      if (!options.notifier) await notifier.settle()
    },
  }
}

/** The config sections continuous archiving adds to `dbb serve` (its settings' flags are declared in src/settings.ts). */
export const ARCHIVING_SECTIONS: readonly Section[] = ['baseBackup', 'archiving', 'walStreaming', 'check', 'notify']
