import {Cron} from 'croner'

import type {ScheduleConfig} from '../config'
import {toIsoDuration} from '../duration'
import type {Logger} from '../logger'
import type {StartResult} from './jobs'

/** Time, injectable so tests run a day of schedule in milliseconds. */
export interface SchedulerClock {
  now(): number
  /** Calls `callback` after `delayMs`; returns a function that cancels it. */
  setTimer(callback: () => void, delayMs: number): () => void
}

export const systemClock: SchedulerClock = {
  now: () => Date.now(),
  setTimer(callback, delayMs) {
    const timer = setTimeout(callback, delayMs)
    return () => clearTimeout(timer)
  },
}

// setTimeout fires at once for delays above 2^31-1 ms (~24.8 days): longer waits are chained.
const MAX_TIMER_MS = 2 ** 31 - 1

/** Interval mode: a failed backup is retried this soon, doubling with each further failure, never later than one interval. */
export const RETRY_AFTER_FAILURE_MS = 5 * 60 * 1000

export type ScheduleDescription =
  | {kind: 'interval'; interval: string; intervalSeconds: number}
  | {kind: 'cron'; cron: string; timezone: string}

export interface SchedulerOptions {
  schedule: ScheduleConfig
  /** Starts a scheduled backup; the job registry decides whether one is already in flight. */
  trigger: () => StartResult
  logger: Logger
  clock?: SchedulerClock
  /** Interval mode: when the newest successful backup finished (from storage), if there is one. */
  lastSuccessAt?: Date
  /** What it schedules, in its log messages (default "backup"; "drill" for restore drills). */
  what?: string
}

/**
 * Fires scheduled backups. With an interval, a run is due one interval after the last successful
 * backup (whoever triggered it) — so restarting the container does not postpone backups, and the
 * first run of a fresh deployment happens right away — and a failed one is retried after
 * RETRY_AFTER_FAILURE_MS. With a cron expression, at its next match.
 */
export class Scheduler {
  private readonly clock: SchedulerClock
  private readonly cron?: Cron
  private next?: number
  private cancelTimer?: () => void
  private running = false
  private consecutiveFailures = 0

  private readonly what: string

  constructor(private readonly options: SchedulerOptions) {
    this.what = options.what ?? 'backup'
    this.clock = options.clock ?? systemClock
    if (options.schedule.kind === 'cron') {
      this.cron = new Cron(options.schedule.expression, {paused: true, timezone: options.schedule.timezone})
    }
  }

  start(): void {
    this.running = true
    const {schedule, lastSuccessAt} = this.options
    const now = this.clock.now()
    const due = schedule.kind === 'interval' && lastSuccessAt ? Math.max(now, lastSuccessAt.getTime() + schedule.intervalMs) : now
    this.arm(schedule.kind === 'interval' ? due : this.cronAfter(now))
    this.options.logger.info({event: 'scheduler.started', ...this.describe(), nextRunAt: this.nextRunAt()?.toISOString() ?? null}, 'scheduler started')
  }

  stop(): void {
    this.running = false
    this.cancelTimer?.()
    this.cancelTimer = undefined
    this.next = undefined
  }

  nextRunAt(): Date | undefined {
    return this.next === undefined ? undefined : new Date(this.next)
  }

  /** Interval mode: any successful backup restarts the interval. */
  backupSucceeded(at: Date): void {
    this.consecutiveFailures = 0
    if (!this.running || this.options.schedule.kind !== 'interval') return
    this.arm(at.getTime() + this.options.schedule.intervalMs)
    this.options.logger.info({event: 'scheduler.next', nextRunAt: this.nextRunAt()?.toISOString()}, `next scheduled ${this.what}`)
  }

  /**
   * Interval mode: a failed backup (the database not up yet beside a starting sidecar, a network
   * blip) is retried after RETRY_AFTER_FAILURE_MS, then 10, 20 … minutes while it keeps failing,
   * never later than one interval. Cron mode keeps to its expression, as cron users expect.
   */
  backupFailed(at: Date): void {
    this.consecutiveFailures++
    if (!this.running || this.options.schedule.kind !== 'interval') return
    const backoff = RETRY_AFTER_FAILURE_MS * 2 ** Math.min(this.consecutiveFailures - 1, 20)
    const retryAt = at.getTime() + Math.min(backoff, this.options.schedule.intervalMs)
    if (this.next !== undefined && this.next <= retryAt) return
    this.arm(retryAt)
    this.options.logger.info({event: 'scheduler.retry', nextRunAt: this.nextRunAt()?.toISOString()}, `${this.what} failed: retrying at the next scheduled time`)
  }

  describe(): ScheduleDescription {
    const {schedule} = this.options
    if (schedule.kind === 'interval') {
      return {kind: 'interval', interval: toIsoDuration(schedule.intervalMs), intervalSeconds: Math.round(schedule.intervalMs / 1000)}
    }

    return {kind: 'cron', cron: schedule.expression, timezone: schedule.timezone ?? Intl.DateTimeFormat().resolvedOptions().timeZone}
  }

  private arm(at: number | undefined): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    this.next = at
    if (at === undefined || !this.running) return
    const delay = Math.min(Math.max(0, at - this.clock.now()), MAX_TIMER_MS)
    this.cancelTimer = this.clock.setTimer(() => this.wake(), delay)
  }

  private wake(): void {
    if (!this.running || this.next === undefined) return
    const now = this.clock.now()
    // Woken early: a chained long wait, or a clock that moved. Wait for the rest.
    if (now < this.next) return this.arm(this.next)
    const result = this.options.trigger()
    const {schedule} = this.options
    this.arm(schedule.kind === 'interval' ? now + schedule.intervalMs : this.cronAfter(now))
    const nextRunAt = this.nextRunAt()?.toISOString() ?? null
    if (result.started) {
      this.options.logger.info({event: 'scheduler.fired', jobId: result.job.jobId, nextRunAt}, `scheduled ${this.what} started`)
    } else {
      this.options.logger.warn(
        {event: 'scheduler.skipped', runningJobId: result.running.jobId, nextRunAt},
        `scheduled ${this.what} skipped: job ${result.running.jobId} is still in flight`,
      )
    }
  }

  private cronAfter(now: number): number | undefined {
    return this.cron?.nextRun(new Date(now))?.getTime()
  }
}
