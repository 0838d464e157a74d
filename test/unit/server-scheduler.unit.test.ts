import type {Job, StartResult} from '../../src/server/jobs'
import {Scheduler} from '../../src/server/scheduler'
import {FakeClock, captureLogger} from '../helpers/serve'

const HOUR = 3600 * 1000

function job(jobId: string): Job {
  return {jobId, status: 'running', triggeredBy: 'scheduler', startedAt: null, finishedAt: null, durationMs: null, errorMessage: null, backupId: null}
}

/** A trigger that records when it fired and answers "started" unless told a job is in flight. */
function recordingTrigger(clock: FakeClock) {
  const fired: string[] = []
  let busyWith: string | undefined
  const trigger = (): StartResult => {
    fired.push(new Date(clock.now()).toISOString())
    return busyWith ? {started: false, running: job(busyWith)} : {started: true, job: job(`job-${fired.length}`)}
  }

  return {trigger, fired, setBusy: (jobId: string | undefined) => (busyWith = jobId)}
}

describe('Scheduler (fake clock)', () => {
  it('interval: runs at once when there is no backup yet, then every interval, and logs the next run at start', () => {
    const clock = new FakeClock(new Date('2026-11-21T10:00:00Z'))
    const {trigger, fired} = recordingTrigger(clock)
    const {logger, lines} = captureLogger()
    const scheduler = new Scheduler({schedule: {kind: 'interval', intervalMs: 12 * HOUR}, trigger, logger, clock})
    scheduler.start()
    expect(lines()[0]).toMatchObject({event: 'scheduler.started', kind: 'interval', interval: 'PT12H', nextRunAt: '2026-11-21T10:00:00.000Z'})

    clock.advance(0)
    clock.advance(36 * HOUR)
    expect(fired).toEqual(['2026-11-21T10:00:00.000Z', '2026-11-21T22:00:00.000Z', '2026-11-22T10:00:00.000Z', '2026-11-22T22:00:00.000Z'])
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-23T10:00:00.000Z')
    scheduler.stop()
    clock.advance(48 * HOUR)
    expect(fired).toHaveLength(4)
    expect(clock.pendingTimers()).toBe(0)
  })

  it('interval: the first run is due one interval after the last successful backup, and any success restarts the interval', () => {
    const clock = new FakeClock(new Date('2026-11-21T10:00:00Z'))
    const {trigger, fired} = recordingTrigger(clock)
    const {logger} = captureLogger()
    const scheduler = new Scheduler({
      schedule: {kind: 'interval', intervalMs: 24 * HOUR},
      trigger,
      logger,
      clock,
      lastSuccessAt: new Date('2026-11-21T03:00:00Z'),
    })
    scheduler.start()
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-22T03:00:00.000Z')
    clock.advance(6 * HOUR)
    scheduler.backupSucceeded(new Date(clock.now())) // e.g. a backup requested through the API
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-22T16:00:00.000Z')
    clock.advance(24 * HOUR)
    expect(fired).toEqual(['2026-11-22T16:00:00.000Z'])
  })

  it('interval: a failed backup is retried after 5 minutes, then 10, … (not a whole interval later); cron mode keeps its expression', () => {
    const clock = new FakeClock(new Date('2026-11-21T10:00:00Z'))
    const {trigger, fired} = recordingTrigger(clock)
    const {logger, lines} = captureLogger()
    const scheduler = new Scheduler({schedule: {kind: 'interval', intervalMs: 24 * HOUR}, trigger, logger, clock})
    scheduler.start()
    clock.advance(0) // the first run of a fresh deployment: the database is not up yet, it fails
    clock.advance(60_000)
    scheduler.backupFailed(new Date(clock.now()))
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-21T10:06:00.000Z')
    expect(lines().at(-1)).toMatchObject({event: 'scheduler.retry', nextRunAt: '2026-11-21T10:06:00.000Z'})
    clock.advance(5 * 60_000)
    expect(fired).toEqual(['2026-11-21T10:00:00.000Z', '2026-11-21T10:06:00.000Z'])
    scheduler.backupFailed(new Date(clock.now())) // still failing: the wait doubles
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-21T10:16:00.000Z')
    clock.advance(10 * 60_000)
    scheduler.backupSucceeded(new Date(clock.now()))
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-22T10:16:00.000Z')
    scheduler.backupFailed(new Date(clock.now())) // after a success the backoff starts over
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-21T10:21:00.000Z')
    scheduler.stop()

    const cron = new Scheduler({schedule: {kind: 'cron', expression: '0 3 * * *', timezone: 'UTC'}, trigger, logger, clock})
    cron.start()
    cron.backupFailed(new Date(clock.now()))
    expect(cron.nextRunAt()?.toISOString()).toBe('2026-11-22T03:00:00.000Z')
    cron.stop()
  })

  it('interval: waits longer than setTimeout can (2^31 ms ≈ 24.8 days) without firing early', () => {
    const clock = new FakeClock(new Date('2026-01-01T00:00:00Z'))
    const {trigger, fired} = recordingTrigger(clock)
    const {logger} = captureLogger()
    const scheduler = new Scheduler({
      schedule: {kind: 'interval', intervalMs: 40 * 24 * HOUR},
      trigger,
      logger,
      clock,
      lastSuccessAt: new Date('2026-01-01T00:00:00Z'),
    })
    scheduler.start()
    clock.advance(39 * 24 * HOUR)
    expect(fired).toEqual([])
    clock.advance(24 * HOUR)
    expect(fired).toEqual(['2026-02-10T00:00:00.000Z'])
  })

  it('cron: fires at each match of the expression in its time zone', () => {
    const clock = new FakeClock(new Date('2026-11-21T10:00:00Z'))
    const {trigger, fired} = recordingTrigger(clock)
    const {logger, lines} = captureLogger()
    const scheduler = new Scheduler({schedule: {kind: 'cron', expression: '0 3 * * *', timezone: 'Europe/Berlin'}, trigger, logger, clock})
    scheduler.start()
    expect(lines()[0]).toMatchObject({event: 'scheduler.started', kind: 'cron', cron: '0 3 * * *', timezone: 'Europe/Berlin'})
    expect(scheduler.nextRunAt()?.toISOString()).toBe('2026-11-22T02:00:00.000Z')
    clock.advance(48 * HOUR)
    expect(fired).toEqual(['2026-11-22T02:00:00.000Z', '2026-11-23T02:00:00.000Z'])
    expect(scheduler.describe()).toEqual({kind: 'cron', cron: '0 3 * * *', timezone: 'Europe/Berlin'})
  })

  it('skips a run while a backup is in flight, logs the skip with the running job, and keeps the schedule', () => {
    const clock = new FakeClock(new Date('2026-11-21T10:00:00Z'))
    const {trigger, fired, setBusy} = recordingTrigger(clock)
    const {logger, lines} = captureLogger()
    const scheduler = new Scheduler({schedule: {kind: 'cron', expression: '*/10 * * * *'}, trigger, logger, clock})
    scheduler.start()
    setBusy('job-from-the-api')
    clock.advance(10 * 60 * 1000)
    setBusy(undefined)
    clock.advance(10 * 60 * 1000)
    expect(fired).toHaveLength(2)
    const events = lines().map((line) => line.event)
    expect(events).toEqual(['scheduler.started', 'scheduler.skipped', 'scheduler.fired'])
    expect(lines()[1]).toMatchObject({level: 40, runningJobId: 'job-from-the-api', nextRunAt: '2026-11-21T10:20:00.000Z'})
    expect(lines()[2]).toMatchObject({jobId: 'job-2', nextRunAt: '2026-11-21T10:30:00.000Z'})
  })
})
