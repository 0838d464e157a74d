import {runBaseBackup} from '../backup/base-backup'
import {listBackups} from '../backup/metadata'
import {describeFailures, logicalBackupIntervalMs, runChecks} from '../check/checks'
import {notifySlack, slackConfigured} from '../check/slack'
import type {Config, Section} from '../config'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import {JobRegistry} from '../server/jobs'
import {Scheduler, SchedulerClock, systemClock} from '../server/scheduler'
import type {StorageBackend} from '../storage/contract'
import {WalStreamer, defaultSpoolDir} from './streamer'

export type ArchivingServiceConfig = Pick<
  Config,
  'database' | 'namePrefix' | 'retention' | 'schedule' | 'baseBackup' | 'archiving' | 'walStreaming' | 'check' | 'slack'
> &
  Partial<Pick<Config, 'compression'>>

export interface ArchivingService {
  streamer?: WalStreamer
  /** Base backup jobs (their own single-flight lock, independent of logical backups). */
  baseBackups?: {jobs: JobRegistry; scheduler: Scheduler}
  /** Runs the staleness checks now (and alerts on failure); what CHECK_INTERVAL triggers. */
  checkNow(): Promise<void>
  /** Alerts Slack about a scheduled backup that failed (the logical scheduler calls this too). */
  scheduledBackupFailed(kind: 'logical' | 'base', error: string | null): Promise<void>
  /** Stops the schedules, lets a base backup in flight finish within graceMs (else aborts it), stops streaming after a last upload. */
  stop(graceMs?: number): Promise<void>
}

/**
 * The continuous-archiving parts of `dbb serve`, each off unless configured: WAL streaming
 * (WAL_STREAMING=true), scheduled base backups (BASE_BACKUP_INTERVAL or BASE_BACKUP_SCHEDULE),
 * scheduled checks (CHECK_INTERVAL) and Slack alerts when a check or a scheduled backup fails.
 */
export async function startArchivingService(options: {
  config: ArchivingServiceConfig
  storage: StorageBackend
  logger: Logger
  clock?: SchedulerClock
}): Promise<ArchivingService> {
  const {config, storage} = options
  const logger = options.logger.child({component: 'archiving'})
  const clock = options.clock ?? systemClock
  const alert = async (text: string) => {
    if (slackConfigured(config.slack)) await notifySlack(config.slack, text, logger)
  }

  const scheduledBackupFailed = async (kind: 'logical' | 'base', error: string | null) => {
    await alert(`:rotating_light: scheduled ${kind} backup failed on ${storage.location}: ${error ?? 'unknown error'}`)
  }

  let streamer: WalStreamer | undefined
  if (config.walStreaming.enabled) {
    streamer = new WalStreamer({
      database: config.database,
      storage,
      slot: config.walStreaming.slot,
      spoolDir: config.walStreaming.spoolDir ?? defaultSpoolDir(config.walStreaming.slot),
      logger,
    })
    await streamer.start()
  }

  let baseBackups: ArchivingService['baseBackups']
  if (config.archiving.baseBackupSchedule) {
    const jobs = new JobRegistry({
      logger,
      work: ({job, signal, logger: jobLogger}) =>
        runBaseBackup(
          {database: config.database, storage, namePrefix: config.namePrefix, retention: config.retention, logger: jobLogger, baseBackup: config.baseBackup, compression: config.compression},
          {triggeredBy: job.triggeredBy, signal},
        ),
      onFinish: (job) => {
        if (job.status === 'succeeded' && job.finishedAt) scheduler.backupSucceeded(new Date(job.finishedAt))
        if (job.status === 'failed' && job.finishedAt) scheduler.backupFailed(new Date(job.finishedAt))
        if (job.status === 'failed') void scheduledBackupFailed('base', job.errorMessage)
      },
    })
    const [newest] = await listBackups(storage, {prefix: config.namePrefix, type: 'base'}).catch(() => [])
    const scheduler = new Scheduler({
      schedule: config.archiving.baseBackupSchedule,
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
      if (report.ok) {
        logger.info({event: 'check.passed'}, 'backup check passed')
        return
      }

      const failures = describeFailures(report)
      logger.warn({event: 'check.failed', failures}, `backup check failed: ${failures.join('; ')}`)
      await alert(`:rotating_light: dbb check failed for ${report.location}: ${failures.join('; ')}`)
    } catch (error) {
      logger.error({event: 'check.error', error: errorMessage(error)}, 'backup check could not run')
      await alert(`:rotating_light: dbb check could not run on ${storage.location}: ${errorMessage(error)}`)
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
    scheduledBackupFailed,
    async stop(graceMs = 30_000) {
      stopped = true
      cancelCheck?.()
      baseBackups?.scheduler.stop()
      if (baseBackups && !(await baseBackups.jobs.whenIdle(graceMs))) {
        baseBackups.jobs.abort('the service is shutting down')
        await baseBackups.jobs.whenIdle(15_000)
      }

      await streamer?.stop()
    },
  }
}

/** The config sections continuous archiving adds to `dbb serve` (its settings' flags are declared in src/settings.ts). */
export const ARCHIVING_SECTIONS: readonly Section[] = ['baseBackup', 'archiving', 'walStreaming', 'check', 'slack']
