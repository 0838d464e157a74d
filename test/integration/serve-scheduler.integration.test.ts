import * as fs from 'node:fs/promises'

import {DatabaseConfig, ScheduleConfig, loadConfig} from '../../src/config'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {RunningService, startService} from '../../src/server/service'
import {tempDir} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {captureLogger, waitFor} from '../helpers/serve'

describe('dbb serve scheduler (real PostgreSQL, local storage, real time)', () => {
  let cluster: PgCluster
  let database: DatabaseConfig
  const cleanups: (() => Promise<void>)[] = []

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 500)
    database = loadConfig(['database'], cluster.dbbEnv('shop')).database
  })

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  afterAll(async () => {
    await cluster?.destroy()
  })

  async function start(schedule: ScheduleConfig, backupsToRetain?: number) {
    const dir = await tempDir('dbb-sched-')
    const log = captureLogger()
    const service: RunningService = await startService({
      config: {
        database,
        namePrefix: 'backup',
        retention: {retentionDays: 7, backupsToRetain, orphanGraceMs: 24 * 3600 * 1000},
        server: {apiToken: 'scheduler-test-token-0123456789', port: 0, host: '127.0.0.1', shutdownGraceMs: 5000},
        schedule,
      },
      storage: new LocalBackend(dir),
      logger: log.logger,
    })
    cleanups.push(async () => {
      await service.shutdown('test done')
      await fs.rm(dir, {recursive: true, force: true})
    })
    return {service, dir, log}
  }

  const succeededScheduledJobs = (service: RunningService) =>
    service.jobs.list().filter((job) => job.triggeredBy === 'scheduler' && job.status === 'succeeded')

  it('interval: backs up at start (no backup yet), again one interval after, and applies retention after each run', async () => {
    const {service, dir, log} = await start({kind: 'interval', intervalMs: 1000}, 1)
    expect(log.lines().find((line) => line.event === 'scheduler.started')).toMatchObject({interval: 'PT1S', intervalSeconds: 1})
    const jobs = await waitFor(() => (succeededScheduledJobs(service).length >= 2 ? succeededScheduledJobs(service) : undefined), 30_000, 'two scheduled backups')
    await service.shutdown('enough runs')

    const files = (await fs.readdir(dir)).sort()
    // BACKUPS_TO_RETAIN=1: retention after the later run removed the earlier backup.
    const listed = files.filter((file) => file.endsWith('.sql.gz'))
    expect(listed).toHaveLength(1)
    expect(files).toEqual([listed[0], `${listed[0]}.meta.json`])
    expect(jobs.map((job) => job.backupId)).toContain(listed[0])
    const older = jobs.map((job) => job.backupId).find((id) => id !== listed[0])
    const pruned = log.lines().find((line) => line.event === 'prune.deleted' && line.backupId === older)
    expect(pruned).toMatchObject({triggeredBy: 'scheduler', jobId: expect.any(String)})
  })

  it('cron: fires at the next match (every second here) and skips, with a log line, while the backup is still running', async () => {
    const release = await holdTableLock(cluster, 'shop', 'customers') // pg_dump waits: the first run stays in flight
    const {service, log} = await start({kind: 'cron', expression: '* * * * * *', timezone: 'UTC'})
    try {
      const skipped = await waitFor(() => log.lines().find((line) => line.event === 'scheduler.skipped'), 10_000, 'a skipped run')
      const running = service.jobs.inFlight()
      expect(running).toMatchObject({triggeredBy: 'scheduler', status: 'running'})
      expect(skipped).toMatchObject({level: 40, runningJobId: running?.jobId})
    } finally {
      await release()
    }

    const [first] = await waitFor(() => (succeededScheduledJobs(service).length > 0 ? succeededScheduledJobs(service) : undefined), 20_000, 'a scheduled backup')
    expect(first.backupId).toMatch(/^backup_\d{8}T\d{6}Z(-\d+)?\.sql\.gz$/)
    const fired = log.lines().filter((line) => line.event === 'scheduler.fired')
    expect(fired.length).toBeGreaterThanOrEqual(1)
    expect(Date.parse(String(fired[0].nextRunAt)) % 1000).toBe(0)
  })
})
