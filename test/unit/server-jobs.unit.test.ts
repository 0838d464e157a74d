import type {BackupOutcome} from '../../src/backup/run-backup'
import {JobContext, JobRegistry} from '../../src/server/jobs'
import {captureLogger} from '../helpers/serve'

function outcome(id: string): BackupOutcome {
  return {
    metadata: {
      id,
      type: 'logical',
      createdAt: '2026-11-21T03:00:00.000Z',
      sizeBytes: 10,
      sha256: 'a'.repeat(64),
      durationMs: 5,
      triggeredBy: 'api',
      database: 'app',
      pgVersion: '15.18',
      format: 'plain',
      compression: 'gzip',
    },
  }
}

/** A job body the test finishes by hand. */
function controllable() {
  const pending: {resolve: (value: BackupOutcome) => void; reject: (error: Error) => void; context: JobContext}[] = []
  const work = (context: JobContext) =>
    new Promise<BackupOutcome>((resolve, reject) => {
      pending.push({resolve, reject, context})
      context.signal.addEventListener('abort', () => reject(new Error('backup interrupted')))
    })
  return {work, pending}
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

describe('JobRegistry: single flight, job states, FIFO eviction', () => {
  it('moves a job from queued to running to succeeded, with its backup id, duration and jobId/triggeredBy on every log line', async () => {
    const {logger, lines} = captureLogger()
    const {work, pending} = controllable()
    const times = [new Date('2026-11-21T03:00:00Z'), new Date('2026-11-21T03:00:02.500Z')]
    const jobs = new JobRegistry({work, logger, now: () => times.shift() ?? new Date()})

    const result = jobs.start('scheduler')
    expect(result.started).toBe(true)
    if (!result.started) return
    expect(result.job).toMatchObject({status: 'queued', triggeredBy: 'scheduler', startedAt: null, backupId: null})
    await tick()
    expect(jobs.get(result.job.jobId)).toMatchObject({status: 'running', startedAt: '2026-11-21T03:00:00.000Z', backupId: null})
    // Issue 16 item 9: the running job names its backup as soon as the id is claimed.
    pending[0].context.idClaimed('backup_20261121T030000Z.sql.gz')
    expect(jobs.get(result.job.jobId)).toMatchObject({status: 'running', backupId: 'backup_20261121T030000Z.sql.gz'})
    pending[0].context.logger.info({event: 'inside'}, 'a line from the backup itself')
    pending[0].resolve(outcome('backup_20261121T030000Z.sql.gz'))
    await jobs.whenIdle()

    expect(jobs.get(result.job.jobId)).toEqual({
      jobId: result.job.jobId,
      status: 'succeeded',
      triggeredBy: 'scheduler',
      startedAt: '2026-11-21T03:00:00.000Z',
      finishedAt: '2026-11-21T03:00:02.500Z',
      durationMs: 2500,
      errorMessage: null,
      backupId: 'backup_20261121T030000Z.sql.gz',
    })
    const jobLines = lines().filter((line) => line.jobId === result.job.jobId)
    expect(jobLines.map((line) => line.event)).toEqual(['job.started', 'inside', 'job.finished'])
    for (const line of jobLines) expect(line.triggeredBy).toBe('scheduler')
    expect(jobLines[2]).toMatchObject({backupId: 'backup_20261121T030000Z.sql.gz', durationMs: 2500, status: 'succeeded'})
  })

  it('refuses a second job while one is in flight, answering with the running job, and frees the lock when it ends', async () => {
    const {logger} = captureLogger()
    const {work, pending} = controllable()
    const jobs = new JobRegistry({work, logger})
    const first = jobs.start('api')
    const results = Array.from({length: 100}, () => jobs.start('api'))
    expect(results.filter((result) => result.started)).toHaveLength(0)
    if (!first.started) throw new Error('first job did not start')
    for (const result of results) if (!result.started) expect(result.running.jobId).toBe(first.job.jobId)
    expect(jobs.inFlight()?.jobId).toBe(first.job.jobId)

    await tick()
    pending[0].reject(new Error('pg_dump failed (exit code 1): pg_dump: error: connection refused'))
    await jobs.whenIdle()
    expect(jobs.get(first.job.jobId)).toMatchObject({
      status: 'failed',
      errorMessage: 'pg_dump failed (exit code 1): pg_dump: error: connection refused',
      backupId: null,
    })
    expect(jobs.inFlight()).toBeUndefined()
    expect(jobs.start('scheduler').started).toBe(true)
  })

  it('keeps the newest 100 jobs and evicts the oldest first when the 101st arrives', async () => {
    const {logger} = captureLogger()
    let count = 0
    const jobs = new JobRegistry({logger, work: async () => outcome(`backup_20261121T030000Z-${++count}.sql.gz`)})
    const ids: string[] = []
    for (let index = 0; index < 101; index++) {
      const result = jobs.start('api')
      if (!result.started) throw new Error('a job was refused although none was in flight')
      ids.push(result.job.jobId)
      await jobs.whenIdle()
    }

    expect(jobs.list()).toHaveLength(100)
    expect(jobs.get(ids[0])).toBeUndefined()
    expect(jobs.get(ids[1])?.status).toBe('succeeded')
    expect(jobs.list()[0].jobId).toBe(ids[100])
    expect(jobs.list()[99].jobId).toBe(ids[1])
  })

  it('aborts the job in flight through its signal, and reports a timeout from whenIdle', async () => {
    const {logger} = captureLogger()
    const {work} = controllable()
    const finished: string[] = []
    const jobs = new JobRegistry({work, logger, onFinish: (job) => finished.push(job.status)})
    const result = jobs.start('api')
    await tick()
    expect(await jobs.whenIdle(20)).toBe(false)
    jobs.abort('shutting down')
    expect(await jobs.whenIdle(1000)).toBe(true)
    if (!result.started) throw new Error('job did not start')
    expect(jobs.get(result.job.jobId)).toMatchObject({status: 'failed', errorMessage: 'backup interrupted'})
    expect(finished).toEqual(['failed'])
  })

  it('returns copies, so a caller cannot change the registry’s jobs', () => {
    const {logger} = captureLogger()
    const jobs = new JobRegistry({logger, work: controllable().work})
    const result = jobs.start('api')
    if (!result.started) throw new Error('job did not start')
    result.job.status = 'succeeded'
    expect(jobs.get(result.job.jobId)?.status).toBe('queued')
  })
})
