import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, holdTableLock, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {jsonOf, waitFor} from '../helpers/serve'

const TOKEN = 'e2e-replica-token-0123456789abcdef'
const auth = {Authorization: `Bearer ${TOKEN}`}

/**
 * Two `dbb serve` processes (a Deployment with replicas: 2) against one real PostgreSQL and one
 * storage location: the database's advisory job lock makes them take one backup per slot and run
 * one job at a time, and the API's 409 holds across them.
 */
describe('two dbb serve replicas, one database, one storage (real PostgreSQL)', () => {
  let cluster: PgCluster
  let backupDir: string
  const running: ChildProcess[] = []

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 2000)
  })

  beforeEach(async () => {
    backupDir = await tempDir('dbb-replicas-')
  })

  afterEach(async () => {
    for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  afterAll(async () => {
    await cluster?.destroy()
  })

  async function replica(env: Record<string, string> = {}) {
    const port = await freePort()
    const child = startCli(['serve'], {
      ...cluster.dbbEnv('shop'),
      BACKUP_LOCAL_DIR: backupDir,
      API_TOKEN: TOKEN,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      ...env,
    })
    running.push(child)
    const result = collect(child)
    let stderr = ''
    child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
    await waitFor(() => (stderr.includes('"event":"server.listening"') ? true : undefined), 20_000, 'dbb serve to listen')
    const url = `http://127.0.0.1:${port}`
    return {
      child,
      result,
      url,
      output: () => stderr,
      post: (path: string) => fetch(`${url}${path}`, {method: 'POST', headers: auth}),
      get: (path: string) => jsonOf(fetch(`${url}${path}`, {headers: auth})),
    }
  }

  const dumps = async () => (await fs.readdir(backupDir)).filter((name) => name.endsWith('.sql.gz'))

  it('API: a backup in flight on one replica makes the other answer 409 for backups and drills; afterwards it runs them', async () => {
    const [a, b] = await Promise.all([replica(), replica()])
    const unlock = await holdTableLock(cluster, 'shop', 'customers')
    let released = false
    try {
      const accepted = await a.post('/api/v1/backups')
      expect(accepted.status).toBe(202)
      const {jobId} = await jsonOf(accepted)
      await waitFor(async () => ((await a.get(`/api/v1/backups/jobs/${jobId}`)).status === 'running' ? true : undefined), 20_000, 'the job to run')

      const refused = await b.post('/api/v1/backups')
      expect(refused.status).toBe(409)
      expect(await jsonOf(refused)).toMatchObject({error: 'BACKUP_IN_PROGRESS', message: expect.stringContaining('another dbb replica is running a backup or drill of this database')})
      const drillRefused = await b.post('/api/v1/drills')
      expect(drillRefused.status).toBe(409)
      expect((await jsonOf(drillRefused)).message).toContain('another dbb replica')

      await unlock()
      released = true
      await waitFor(async () => ((await a.get(`/api/v1/backups/jobs/${jobId}`)).status === 'succeeded' ? true : undefined), 60_000, 'the backup to succeed')
    } finally {
      if (!released) await unlock()
    }

    // The lock is free again: the other replica drills the backup, then the list and /info show it.
    const drill = await b.post('/api/v1/drills')
    expect(drill.status).toBe(202)
    const {jobId: drillJob} = await jsonOf(drill)
    const finished = await waitFor(async () => {
      const job = await b.get(`/api/v1/drills/jobs/${drillJob}`)
      return job.finishedAt ? job : undefined
    }, 60_000, 'the drill to finish')
    expect(finished).toMatchObject({status: 'passed', result: {status: 'passed', checked: 'contents'}})
    const [listed] = await a.get('/api/v1/backups')
    expect(listed.drill).toMatchObject({status: 'passed'})
    const info = await jsonOf(fetch(`${a.url}/info`))
    expect(info.drill).toMatchObject({lastSuccessfulDrillBackupId: listed.id, lastDrillStatus: 'passed', lastSuccessfulDrillAgeSeconds: expect.any(Number)})
    const metrics = await (await fetch(`${b.url}/metrics`)).text()
    expect(metrics).toMatch(/^dbb_drills_total\{outcome="passed",service="dbb"\} 1$/m)
    expect(Number(/^dbb_drill_last_success_timestamp_seconds\{service="dbb"\} (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0)
    expect(await dumps()).toHaveLength(1)

    for (const replicaProcess of [a, b]) replicaProcess.child.kill('SIGTERM')
    expect((await a.result).code).toBe(0)
    expect((await b.result).code).toBe(0)
  })

  // DB_NAMES: the slot is taken when any database's prefix (`backup_shop_…`) or the globals' holds this slot's backup.
  it.each([
    {setup: 'DB_NAME', env: {} as Record<string, string>, ids: /backup_\d{8}T\d{6}Z\.sql\.gz/, stored: 1},
    {setup: 'DB_NAMES=shop (globals + one database per run)', env: {DB_NAMES: 'shop'}, ids: /backup_(?:shop|-globals)_\d{8}T\d{6}Z\.sql\.gz/, stored: 2},
  ])('schedule ($setup): both replicas fire for the same slot, one takes the backup, the other waits for the lock and skips', async ({env, ids, stored}) => {
    const unlock = await holdTableLock(cluster, 'shop', 'customers')
    let released = false
    try {
      // Every minute: both replicas fire at the next minute boundary (at most a minute away).
      const [a, b] = await Promise.all([replica({BACKUP_SCHEDULE: '* * * * *', ...env}), replica({BACKUP_SCHEDULE: '* * * * *', ...env})])
      const waiting = await waitFor(() => [a, b].find((r) => r.output().includes('"event":"job_lock.waiting"')), 75_000, 'one replica to wait for the job lock')
      const taking = waiting === a ? b : a
      await waitFor(() => (taking.output().includes('"event":"backup.started"') ? true : undefined), 20_000, 'the other replica to start its backup')
      expect(waiting.output()).not.toContain('"event":"backup.started"')

      await unlock()
      released = true
      await waitFor(() => (waiting.output().includes('"status":"skipped"') ? true : undefined), 60_000, 'the waiting replica to skip')
      await waitFor(() => (taking.output().includes('"event":"backup.succeeded"') ? true : undefined), 60_000, 'the backup to succeed')
      expect(waiting.output()).toMatch(new RegExp(`this slot's backup was already taken \\(${ids.source}, by another replica\\)`))
      expect(waiting.output()).not.toContain('"event":"backup.started"')
      expect(await dumps()).toHaveLength(stored)
      for (const replicaProcess of [a, b]) replicaProcess.child.kill('SIGTERM')
      await Promise.all([a.result, b.result])
    } finally {
      if (!released) await unlock()
    }
    // Its own waits add up to more than jest's default 120 s (up to a minute for the slot, then each
    // step's budget): a step that hangs must fail with its waitFor label, not with jest's bare timeout.
  }, 240_000)

  it('DRILL_INTERVAL: serve drills the newest backup at once when it was never drilled, and stores the result', async () => {
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir})
    expect(backup.code).toBe(0)
    const {id} = JSON.parse(backup.stdout).metadata
    const a = await replica({DRILL_INTERVAL: '7d'})
    await waitFor(() => (a.output().includes('"event":"drill.passed"') ? true : undefined), 60_000, 'the scheduled drill to pass')
    expect(a.output()).toContain('scheduled drill started')
    expect(JSON.parse(await fs.readFile(`${backupDir}/${id}.drill.json`, 'utf8'))).toMatchObject({backupId: id, status: 'passed', checked: 'contents'})
    a.child.kill('SIGTERM')
    expect((await a.result).code).toBe(0)
  })
})
