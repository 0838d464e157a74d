import {randomUUID} from 'node:crypto'

import {resolveBackup} from '../backup/metadata'
import {PhysicalDrillDependencies, runPhysicalDrill} from '../drill/physical'
import {DrillDependencies, describeFailure, runDrill} from '../drill/run-drill'
import type {DrillResult} from '../drill/result'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {JobLease, JobLock} from './job-lock'
import type {JobTrigger} from './jobs'

/** A drill job as the API reports it. */
export interface DrillJob {
  jobId: string
  kind: 'drill'
  /** passed/failed: the drill's verdict; error: it could not run (no verdict); skipped: another replica's job held the lock. */
  status: 'queued' | 'running' | 'passed' | 'failed' | 'error' | 'skipped'
  triggeredBy: JobTrigger
  /** What was asked for: an id or "latest"; backupId once resolved. */
  reference: string
  backupId: string | null
  startedAt: string | null
  finishedAt: string | null
  errorMessage: string | null
  result: DrillResult | null
}

export type DrillStart = {started: true; job: DrillJob} | {started: false; running: DrillJob}

const KEPT_JOBS = 20

/**
 * The restore drills of one `dbb serve`: one at a time in this process, and, through the replica
 * job lock, never while another replica runs a backup or drill of the same database. Scheduled
 * drills yield (skip) when the lock is held; the API asks for the lock before it answers 202.
 */
export class DrillJobs {
  private readonly jobs = new Map<string, DrillJob>()
  private current?: {job: DrillJob; controller: AbortController; done: Promise<void>}

  constructor(
    private readonly options: {
      drill: Omit<DrillDependencies, 'logger'>
      /** Physical drills of base backups (DRILL_TYPE=base for "latest"; a base backup's id always). */
      physical?: Omit<PhysicalDrillDependencies, 'logger'>
      latestType?: 'logical' | 'base'
      lock?: JobLock
      logger: Logger
      onFinish?: (job: Readonly<DrillJob>) => void
    },
  ) {}

  start(triggeredBy: JobTrigger, reference = 'latest', lease?: JobLease): DrillStart {
    if (this.current) return {started: false, running: {...this.current.job}}
    const job: DrillJob = {jobId: randomUUID(), kind: 'drill', status: 'queued', triggeredBy, reference, backupId: null, startedAt: null, finishedAt: null, errorMessage: null, result: null}
    this.jobs.set(job.jobId, job)
    while (this.jobs.size > KEPT_JOBS) this.jobs.delete(this.jobs.keys().next().value as string)
    const controller = new AbortController()
    this.current = {job, controller, done: this.execute(job, controller.signal, lease)}
    return {started: true, job: {...job}}
  }

  get(jobId: string): DrillJob | undefined {
    const job = this.jobs.get(jobId)
    return job && {...job}
  }

  inFlight(): DrillJob | undefined {
    return this.current && {...this.current.job}
  }

  abort(reason: string): void {
    this.current?.controller.abort(new Error(reason))
  }

  async whenIdle(): Promise<void> {
    await this.current?.done
  }

  /** "latest" drills what DRILL_TYPE says; an id drills what the backup is. */
  private async isPhysical(reference: string): Promise<boolean> {
    const {physical} = this.options
    if (!physical) return false
    if (reference === 'latest') return this.options.latestType === 'base'
    return (await resolveBackup(physical.storage, reference, {prefix: physical.namePrefix})).type === 'base'
  }

  private async execute(job: DrillJob, signal: AbortSignal, given?: JobLease): Promise<void> {
    await Promise.resolve()
    const logger = this.options.logger.child({jobId: job.jobId, triggeredBy: job.triggeredBy, job: 'drill'})
    job.status = 'running'
    job.startedAt = new Date().toISOString()
    let lease = given
    try {
      if (!lease && this.options.lock) {
        lease = await this.options.lock.tryAcquire()
        if (!lease) {
          job.status = 'skipped'
          job.errorMessage = 'another dbb replica is running a backup or drill of this database'
          return
        }
      }

      const onBackup = (backup: {id: string}) => (job.backupId = backup.id)
      const result = (await this.isPhysical(job.reference))
        ? await runPhysicalDrill({...this.options.physical!, logger}, {reference: job.reference, signal, onBackup})
        : await runDrill({...this.options.drill, logger}, {reference: job.reference, signal, onBackup})
      job.result = result
      job.status = result.status
      if (result.status === 'failed') job.errorMessage = describeFailure(result)
    } catch (error) {
      job.status = 'error'
      job.errorMessage = errorMessage(error)
      logger.error({event: 'drill.error', error: job.errorMessage}, `drill could not run: ${job.errorMessage}`)
    } finally {
      await lease?.release()
      job.finishedAt = new Date().toISOString()
      this.current = undefined
      try {
        this.options.onFinish?.(job)
      } catch (error) {
        logger.error({event: 'job.hook_failed', error: errorMessage(error)}, 'could not record the drill outcome')
      }
    }
  }
}
