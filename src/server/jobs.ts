import {randomUUID} from 'node:crypto'

import type {BackupOutcome} from '../backup/run-backup'
import type {MultiBackupOutcome} from '../backup/run-databases'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {JobLease} from './job-lock'

/** `skipped`: another dbb replica took this slot's backup (src/server/job-lock.ts); not a failure. */
export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'skipped'
export type JobTrigger = 'scheduler' | 'api'

/** A backup job as the API reports it. Times are ISO-8601 strings; null until known. */
export interface Job {
  jobId: string
  status: JobStatus
  triggeredBy: JobTrigger
  startedAt: string | null
  finishedAt: string | null
  durationMs: number | null
  errorMessage: string | null
  /** Known once the backup's id is claimed, while it runs; a failed job keeps it (nothing is stored under it). */
  backupId: string | null
  /** DB_NAMES runs only: each database's (and the globals') result, updated as each part ends. */
  run?: Pick<MultiBackupOutcome, 'status' | 'globals' | 'databases'>
}

export interface JobContext {
  job: Readonly<Job>
  signal: AbortSignal
  /** Carries jobId and triggeredBy on every line. */
  logger: Logger
  /** Reports the backup id as soon as it is claimed, so the running job shows it. */
  idClaimed(backupId: string): void
  /** DB_NAMES runs: the per-database results so far. */
  reportRun?(outcome: MultiBackupOutcome): void
  /** The replica job lock, when the starter already holds it (an API request); the work releases it. */
  lease?: JobLease
}

/** Thrown by a job's work when there is nothing to do: the job ends `skipped`, with this as its message. */
export class JobSkippedError extends Error {}

/** The work a job does: one backup. Injected, so the registry is tested without PostgreSQL. */
export type JobWork = (context: JobContext) => Promise<BackupOutcome>

export interface JobRegistryOptions {
  work: JobWork
  logger: Logger
  /** Jobs kept in memory, oldest evicted first (default 100). */
  capacity?: number
  now?: () => Date
  onStart?: (job: Readonly<Job>) => void
  onFinish?: (job: Readonly<Job>, outcome: BackupOutcome | undefined) => void
}

export type StartResult = {started: true; job: Job} | {started: false; running: Job}

export const DEFAULT_JOB_CAPACITY = 100

/**
 * The backup jobs of one `dbb serve` process, and its single-flight lock: the scheduler and the
 * API both start backups here, and at most one is queued or running at any time. `start` checks
 * and takes the lock synchronously, so any number of simultaneous requests yield exactly one job.
 */
export class JobRegistry {
  private readonly jobs = new Map<string, Job>()
  private current?: {job: Job; controller: AbortController; done: Promise<void>}
  private readonly capacity: number
  private readonly now: () => Date

  constructor(private readonly options: JobRegistryOptions) {
    this.capacity = options.capacity ?? DEFAULT_JOB_CAPACITY
    this.now = options.now ?? (() => new Date())
  }

  start(triggeredBy: JobTrigger, lease?: JobLease): StartResult {
    if (this.current) return {started: false, running: {...this.current.job}}
    const job: Job = {
      jobId: randomUUID(),
      status: 'queued',
      triggeredBy,
      startedAt: null,
      finishedAt: null,
      durationMs: null,
      errorMessage: null,
      backupId: null,
    }
    this.remember(job)
    const controller = new AbortController()
    const done = this.execute(job, controller.signal, lease)
    this.current = {job, controller, done}
    return {started: true, job: {...job}}
  }

  get(jobId: string): Job | undefined {
    const job = this.jobs.get(jobId)
    return job && copyJob(job)
  }

  /** The queued or running job, if any. */
  inFlight(): Job | undefined {
    return this.current && {...this.current.job}
  }

  /** Newest first. */
  list(): Job[] {
    return [...this.jobs.values()].reverse().map(copyJob)
  }

  /** Aborts the job in flight; its backup cleans up what it wrote. */
  abort(reason: string): void {
    this.current?.controller.abort(new Error(reason))
  }

  /** Resolves once no job is in flight, or false after `timeoutMs`. */
  async whenIdle(timeoutMs = Number.POSITIVE_INFINITY): Promise<boolean> {
    const running = this.current?.done
    if (!running) return true
    if (!Number.isFinite(timeoutMs)) {
      await running
      return true
    }

    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs)
    })
    try {
      return await Promise.race([running.then(() => true as const), expired])
    } finally {
      clearTimeout(timer)
    }
  }

  private async execute(job: Job, signal: AbortSignal, lease?: JobLease): Promise<void> {
    // Let start() return the job as queued before any work (and any synchronous failure) happens.
    await Promise.resolve()
    const logger = this.options.logger.child({jobId: job.jobId, triggeredBy: job.triggeredBy})
    const started = this.now()
    job.status = 'running'
    job.startedAt = started.toISOString()
    this.options.onStart?.(job)
    logger.info({event: 'job.started'}, 'backup job started')
    let outcome: BackupOutcome | undefined
    try {
      outcome = await this.options.work({
        job: {...job},
        signal,
        logger,
        idClaimed: (backupId) => (job.backupId = backupId),
        reportRun: ({status, globals, databases}) => (job.run = structuredClone({status, globals, databases})),
        lease,
      })
      job.status = 'succeeded'
      job.backupId = outcome.metadata.id
    } catch (error) {
      job.status = error instanceof JobSkippedError ? 'skipped' : 'failed'
      job.errorMessage = errorMessage(error)
    }

    const finished = this.now()
    job.finishedAt = finished.toISOString()
    job.durationMs = finished.getTime() - started.getTime()
    this.current = undefined
    const summary = {event: 'job.finished', status: job.status, backupId: job.backupId, durationMs: job.durationMs}
    if (job.status === 'succeeded') logger.info(summary, 'backup job succeeded')
    else if (job.status === 'skipped') logger.info({...summary, reason: job.errorMessage}, `backup job skipped: ${job.errorMessage}`)
    else logger.error({...summary, error: job.errorMessage}, 'backup job failed')
    try {
      this.options.onFinish?.(job, outcome)
    } catch (error) {
      logger.error({event: 'job.hook_failed', error: errorMessage(error)}, 'could not record the job outcome')
    }
  }

  private remember(job: Job): void {
    this.jobs.set(job.jobId, job)
    // Map iteration is insertion order, so the first key is the oldest job. The job in flight is
    // always the newest, so eviction never drops it.
    while (this.jobs.size > this.capacity) this.jobs.delete(this.jobs.keys().next().value as string)
  }
}

/** A snapshot for callers: the per-database results are copied too, so a reader never sees them change. */
function copyJob(job: Job): Job {
  return job.run ? {...job, run: structuredClone(job.run)} : {...job}
}
