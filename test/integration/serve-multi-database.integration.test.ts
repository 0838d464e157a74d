import * as fs from 'node:fs/promises'

import type {RunningService} from '../../src/server/service'
import {tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {captureLogger, jsonOf, startApiService, waitFor} from '../helpers/serve'

const TOKEN = 'integration-test-token-0123456789abcdef'

describe('dbb serve with DB_NAMES: one job per run, per-database results on the job (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let service: RunningService | undefined

  const api = (url: string, init: RequestInit = {}) => fetch(`${service?.url}${url}`, {...init, headers: {Authorization: `Bearer ${TOKEN}`}})
  const finished = (jobId: string) =>
    waitFor(async () => {
      const job = await jsonOf(api(`/api/v1/backups/jobs/${jobId}`))
      return job.status === 'succeeded' || job.status === 'failed' ? job : undefined
    }, 60_000, `job ${jobId}`)

  beforeAll(async () => {
    cluster = await startPostgres()
    for (const name of ['app', '"my_bill"']) await cluster.psql(`CREATE DATABASE ${name}`)
    await cluster.psql('CREATE TABLE t (id int); INSERT INTO t VALUES (1)', 'app')
    backupDir = await tempDir('dbb-serve-multi-')
  })

  afterEach(async () => {
    await service?.shutdown('test done')
    service = undefined
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  it('a job backs up the globals and each database; one failing database fails the job, the others are stored and listed', async () => {
    const log = captureLogger()
    service = await startApiService(cluster, 'postgres', backupDir, {
      token: TOKEN,
      logger: log.logger,
      databases: {names: ['app', 'gone', 'my_bill'], globals: true, noRolePasswords: false},
    })
    const started = await api('/api/v1/backups', {method: 'POST'})
    expect(started.status).toBe(202)
    const {jobId} = await jsonOf(started)
    // Single flight: the run is one job, a second start is refused while it runs.
    expect((await api('/api/v1/backups', {method: 'POST'})).status).toBe(409)

    const job = await finished(jobId)
    expect(job.status).toBe('failed')
    expect(job.errorMessage).toContain('database "gone" does not exist')
    expect(job.run.status).toBe('partial')
    expect(job.run.globals).toMatchObject({status: 'succeeded', backupId: expect.stringMatching(/^backup_-globals_/)})
    expect(job.run.databases.map((part: {database: string; status: string}) => [part.database, part.status])).toEqual([
      ['app', 'succeeded'],
      ['gone', 'failed'],
      ['my_bill', 'succeeded'],
    ])

    const listed = (await jsonOf(api('/api/v1/backups'))) as {id: string}[]
    const stored = [job.run.globals.backupId, ...job.run.databases.filter((part: {backupId: string | null}) => part.backupId).map((part: {backupId: string}) => part.backupId)]
    expect(listed.map((entry) => entry.id).sort()).toEqual(stored.sort())
    // One database's latest, and its download, through ?db=.
    const latest = await jsonOf(api('/api/v1/backups/latest?db=my_bill'))
    expect(latest).toMatchObject({id: job.run.databases[2].backupId, database: 'my_bill'})
    const download = await api(`/api/v1/backups/latest/download?db=my_bill`)
    expect(download.status).toBe(200)
    expect(Buffer.from(await download.arrayBuffer()).length).toBe(latest.sizeBytes)
    expect((await jsonOf(api('/api/v1/backups?db=app'))).map((entry: {id: string}) => entry.id)).toEqual([job.run.databases[0].backupId])
    // Without ?db, `latest` is no database's: 404 that names the databases and how to pick one.
    const unnamed = await api('/api/v1/backups/latest')
    expect(unnamed.status).toBe(404)
    expect(((await unnamed.json()) as {message: string}).message).toMatch(/taken with DB_NAMES \(app, my_bill\): name one with --db NAME \(REST: \?db=NAME\)/)
  }, 120_000)

  it('all databases stored: the job succeeds', async () => {
    const log = captureLogger()
    const databases = {names: ['app', 'my_bill'], globals: false, noRolePasswords: false}
    service = await startApiService(cluster, 'postgres', backupDir, {token: TOKEN, logger: log.logger, databases})
    const {jobId} = await jsonOf(api('/api/v1/backups', {method: 'POST'}))
    const job = await finished(jobId)
    expect(job.status).toBe('succeeded')
    expect(job.errorMessage).toBeNull()
    expect(job.run.databases.every((part: {status: string}) => part.status === 'succeeded')).toBe(true)
    expect(job.backupId).toBe(job.run.databases[1].backupId)
  }, 120_000)
})
