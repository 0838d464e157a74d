import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import type {RunningService} from '../../src/server/service'
import {tempDir} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {captureLogger, jsonOf, startApiService, waitFor} from '../helpers/serve'

const TOKEN = 'integration-test-token-0123456789abcdef'
const PROMETHEUS_LINE =
  /^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?\d+(\.\d+)?(e[+-]?\d+)?|NaN|[+-]Inf))$/

describe('dbb serve REST API over real HTTP (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let service: RunningService
  let log: ReturnType<typeof captureLogger>

  const api = (url: string, init: RequestInit & {token?: string | null} = {}) => {
    const headers = new Headers(init.headers)
    if (init.token !== null) headers.set('Authorization', `Bearer ${init.token ?? TOKEN}`)
    return fetch(`${service.url}${url}`, {...init, headers})
  }

  /** Holds an exclusive lock on a table, so pg_dump waits and the backup stays in flight. */
  const jobWhen = (jobId: string, done: (status: string) => boolean) =>
    waitFor(async () => {
      const job = await jsonOf(api(`/api/v1/backups/jobs/${jobId}`))
      return done(job.status) ? job : undefined
    }, 30_000, `job ${jobId}`)

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 2000)
    backupDir = await tempDir('dbb-serve-')
    log = captureLogger()
    service = await startApiService(cluster, 'shop', backupDir, {token: TOKEN, logger: log.logger, healthTimeoutMs: 3000})
  })

  afterAll(async () => {
    await service?.shutdown('tests done')
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  it('answers 401 with WWW-Authenticate on every API endpoint without a valid token, and refuses a token in the URL', async () => {
    const endpoints: [string, string][] = [
      ['POST', '/api/v1/backups'],
      ['GET', '/api/v1/backups'],
      ['GET', '/api/v1/backups/latest'],
      ['GET', '/api/v1/backups/jobs/00000000-0000-0000-0000-000000000000'],
      ['GET', '/api/v1/backups/backup_20261121T030000Z.sql.gz/download'],
      ['GET', '/api/v1/backups/latest/download'],
      ['GET', '/api/v1/no-such-thing'],
    ]
    for (const [method, url] of endpoints) {
      for (const token of [null, 'wrong-token-of-some-length', `${TOKEN}x`]) {
        const response = await api(url, {method, token})
        expect([method, url, response.status]).toEqual([method, url, 401])
        expect(response.headers.get('www-authenticate')).toMatch(/^Bearer realm="dbb"/)
        expect(await jsonOf(response)).toEqual({error: 'UNAUTHORIZED', message: expect.stringMatching(/API token/)})
      }
    }

    const inQuery = await api(`/api/v1/backups?access_token=${TOKEN}`, {token: null})
    expect(inQuery.status).toBe(401)
    expect((await jsonOf(inQuery)).message).toMatch(/Authorization header/)
    expect(log.text()).not.toContain(TOKEN)
  })

  it('has no backup yet: an empty list, 404 for latest and its download, /info age null, /health 200', async () => {
    const list = await api('/api/v1/backups')
    expect(list.status).toBe(200)
    expect(await jsonOf(list)).toEqual([])
    for (const url of ['/api/v1/backups/latest', '/api/v1/backups/latest/download']) {
      const response = await api(url)
      expect(response.status).toBe(404)
      expect(await jsonOf(response)).toEqual({error: 'NOT_FOUND', message: expect.stringContaining('no backups found')})
    }

    const info = await jsonOf(fetch(`${service.url}/info`))
    expect(info.backup.lastSuccessfulBackupAgeSeconds).toBeNull()
    expect(info.pgDump.version).toMatch(/^\d+\.\d+/)
    expect(info.schedule).toEqual({kind: 'cron', cron: '0 3 1 1 *', timezone: 'UTC', nextRunAt: expect.stringMatching(/-01-01T03:00:00.000Z$/)})
    expect(info.retention).toEqual({retentionDays: 7, backupsToRetain: null})

    const health = await fetch(`${service.url}/health`)
    expect(health.status).toBe(200)
    expect(await jsonOf(health)).toMatchObject({status: 'ok', checks: {postgres: {ok: true}, storage: {ok: true, backend: 'local'}}})
  })

  it('starts exactly one backup for 100 simultaneous POSTs; the others get 409 naming the running job', async () => {
    const unlock = await holdTableLock(cluster, 'shop', 'customers')
    let jobId: string
    let claimedId: string
    try {
      const responses = await Promise.all(Array.from({length: 100}, () => api('/api/v1/backups', {method: 'POST'})))
      const bodies = await Promise.all(responses.map((response) => jsonOf(response)))
      const accepted = responses.map((response, index) => ({status: response.status, body: bodies[index], location: response.headers.get('location')}))
      const started = accepted.filter((entry) => entry.status === 202)
      expect(started).toHaveLength(1)
      jobId = started[0].body.jobId
      expect(started[0].body).toMatchObject({status: 'queued', triggeredBy: 'api', backupId: null})
      expect(started[0].location).toBe(`/api/v1/backups/jobs/${jobId}`)
      const refused = accepted.filter((entry) => entry.status === 409)
      expect(refused).toHaveLength(99)
      for (const {body} of refused) {
        expect(body).toMatchObject({error: 'BACKUP_IN_PROGRESS', jobId, job: {jobId, triggeredBy: 'api'}})
        expect(body.message).toContain(jobId)
      }

      const running = await jobWhen(jobId, (status) => status === 'running')
      expect(running.startedAt).toEqual(expect.any(String))
      // Issue 16 item 9: the running job names its backup as soon as the id is claimed (pg_dump is still waiting for the lock).
      const claimed = await waitFor(async () => (await jsonOf(api(`/api/v1/backups/jobs/${jobId}`))).backupId ?? undefined, 20_000, 'the claimed id')
      expect(claimed).toMatch(/^backup_\d{8}T\d{6}Z\.sql\.gz$/)
      expect((await jsonOf(api(`/api/v1/backups/jobs/${jobId}`))).status).toBe('running')
      claimedId = claimed
      expect((await jsonOf(fetch(`${service.url}/info`))).backup.jobInFlight).toBe(jobId)
      expect(await (await fetch(`${service.url}/metrics`)).text()).toMatch(/^dbb_backup_in_flight\{service="dbb"\} 1$/m)
    } finally {
      await unlock()
    }

    const job = await jobWhen(jobId, (status) => status === 'succeeded' || status === 'failed')
    expect(job).toMatchObject({status: 'succeeded', triggeredBy: 'api', errorMessage: null})
    expect(job.backupId).toBe(claimedId)
    expect(job.durationMs).toBeGreaterThan(0)
    expect(Date.parse(job.finishedAt) - Date.parse(job.startedAt)).toBe(job.durationMs)

    // Every log line of the job carries its id and trigger; the end names the backup and duration.
    const jobLines = log.lines().filter((line) => line.jobId === jobId)
    expect(jobLines.map((line) => line.event)).toEqual(expect.arrayContaining(['job.started', 'backup.started', 'backup.succeeded', 'job.finished']))
    for (const line of jobLines) expect(line.triggeredBy).toBe('api')
    expect(log.lines().filter((line) => String(line.event).startsWith('backup.') && line.jobId === undefined)).toEqual([])
    expect(jobLines.at(-1)).toMatchObject({event: 'job.finished', backupId: job.backupId, durationMs: job.durationMs})
  })

  it('lists the backup newest first, returns it as latest, and reports it in /info and /metrics', async () => {
    const list = await jsonOf(api('/api/v1/backups'))
    expect(list).toHaveLength(1)
    const sidecar = JSON.parse(await fs.readFile(path.join(backupDir, `${list[0].id}.meta.json`), 'utf8'))
    expect(list[0]).toEqual({...sidecar, status: 'ok', drill: {status: 'never'}})
    expect(sidecar.triggeredBy).toBe('api')
    const latest = await api('/api/v1/backups/latest')
    expect(latest.status).toBe(200)
    expect(await jsonOf(latest)).toEqual(sidecar)

    const info = await jsonOf(fetch(`${service.url}/info`))
    expect(info.backup.lastSuccessfulBackupId).toBe(sidecar.id)
    expect(info.backup.lastSuccessfulBackupAgeSeconds).toEqual(expect.any(Number))
    expect(info.backup.lastSuccessfulBackupAgeSeconds).toBeGreaterThanOrEqual(0)

    const metrics = await fetch(`${service.url}/metrics`)
    expect(metrics.status).toBe(200)
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = await metrics.text()
    for (const line of text.split('\n').filter(Boolean)) expect(line).toMatch(PROMETHEUS_LINE)
    expect(text).toMatch(/^dbb_backups_total\{outcome="succeeded",triggered_by="api",service="dbb"\} 1$/m)
    expect(text).toMatch(/^dbb_backups_total\{outcome="failed",triggered_by="api",service="dbb"\} 0$/m)
    expect(text).toMatch(/^dbb_backup_in_flight\{service="dbb"\} 0$/m)
    expect(text).toContain(`dbb_backup_last_success_size_bytes{service="dbb"} ${sidecar.sizeBytes}`)
    const finished = (Date.parse(sidecar.createdAt) + sidecar.durationMs) / 1000
    expect(Number(/^dbb_backup_last_success_timestamp_seconds\{service="dbb"\} (\S+)$/m.exec(text)?.[1])).toBeCloseTo(finished, 3)
    expect(Number(/^dbb_backup_last_success_duration_seconds\{service="dbb"\} (\S+)$/m.exec(text)?.[1])).toBeCloseTo(sidecar.durationMs / 1000, 3)
  })

  it('downloads the stored bytes by id and as latest, with length, file name, type and the sha256 as ETag', async () => {
    const [backup] = await jsonOf(api('/api/v1/backups'))
    const stored = await fs.readFile(path.join(backupDir, backup.id))
    for (const reference of [backup.id, 'latest']) {
      const response = await api(`/api/v1/backups/${reference}/download`)
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toBe('application/gzip')
      expect(response.headers.get('content-length')).toBe(String(stored.length))
      expect(response.headers.get('content-disposition')).toBe(`attachment; filename="${backup.id}"`)
      expect(response.headers.get('etag')).toBe(`"${backup.sha256}"`)
      expect(response.headers.get('accept-ranges')).toBe('bytes')
      const body = Buffer.from(await response.arrayBuffer())
      expect(body.equals(stored)).toBe(true)
      expect(createHash('sha256').update(body).digest('hex')).toBe(backup.sha256)
    }
  })

  it('resumes with a Range request (206, Content-Range), answers 416 outside the object and 304 for a matching ETag', async () => {
    const [backup] = await jsonOf(api('/api/v1/backups'))
    const stored = await fs.readFile(path.join(backupDir, backup.id))
    const url = `/api/v1/backups/${backup.id}/download`

    const head = await api(url, {headers: {Range: 'bytes=0-99'}})
    const tail = await api(url, {headers: {Range: 'bytes=100-', 'If-Range': `"${backup.sha256}"`}})
    expect([head.status, tail.status]).toEqual([206, 206])
    expect(head.headers.get('content-range')).toBe(`bytes 0-99/${stored.length}`)
    expect(head.headers.get('content-length')).toBe('100')
    expect(tail.headers.get('content-range')).toBe(`bytes 100-${stored.length - 1}/${stored.length}`)
    const resumed = Buffer.concat([Buffer.from(await head.arrayBuffer()), Buffer.from(await tail.arrayBuffer())])
    expect(resumed.equals(stored)).toBe(true)

    const suffix = await api(url, {headers: {Range: 'bytes=-10'}})
    expect(suffix.status).toBe(206)
    expect(Buffer.from(await suffix.arrayBuffer()).equals(stored.subarray(-10))).toBe(true)

    const changed = await api(url, {headers: {Range: 'bytes=0-9', 'If-Range': '"some-other-version"'}})
    expect(changed.status).toBe(200)
    expect(Buffer.from(await changed.arrayBuffer()).equals(stored)).toBe(true)

    const outside = await api(url, {headers: {Range: `bytes=${stored.length}-`}})
    expect(outside.status).toBe(416)
    expect(outside.headers.get('content-range')).toBe(`bytes */${stored.length}`)
    expect(await jsonOf(outside)).toMatchObject({error: 'RANGE_NOT_SATISFIABLE'})

    const cached = await api(url, {headers: {'If-None-Match': `"${backup.sha256}"`}})
    expect(cached.status).toBe(304)
  })

  it('answers 400 for malformed backup ids and 404 for unknown ones, never reading outside the backups', async () => {
    await fs.writeFile(path.join(path.dirname(backupDir), 'outside.sql.gz'), 'not yours')
    // (A bare `..` segment is resolved away by the client's URL parser: see `traversal` below.)
    const sidecar = `${(await jsonOf(api('/api/v1/backups')))[0].id}.meta.json`
    for (const id of [sidecar, '..%2F..%2Fetc%2Fpasswd', '..%2Foutside.sql.gz', 'backup_2026.sql.gz', '%00', 'x'.repeat(300)]) {
      const response = await api(`/api/v1/backups/${id}/download`)
      expect([id, response.status]).toEqual([id, 400])
      expect(await jsonOf(response)).toMatchObject({error: 'INVALID_BACKUP_ID'})
    }

    const traversal = await api('/api/v1/backups/../../outside.sql.gz/download')
    expect(traversal.status).toBe(404)
    const missing = await api('/api/v1/backups/backup_20200101T000000Z.sql.gz/download')
    expect(missing.status).toBe(404)
    expect(await jsonOf(missing)).toEqual({error: 'NOT_FOUND', message: expect.stringContaining('backup_20200101T000000Z.sql.gz not found')})
    const otherPrefix = await api('/api/v1/backups/otherdb_20200101T000000Z.sql.gz/download')
    expect(otherPrefix.status).toBe(404)
    await fs.rm(path.join(path.dirname(backupDir), 'outside.sql.gz'))
  })

  it('answers 404 for an unknown job or route and 405 for a wrong method, always as JSON (unknown routes need the token first)', async () => {
    const job = await api('/api/v1/backups/jobs/no-such-job')
    expect(job.status).toBe(404)
    expect(await jsonOf(job)).toEqual({error: 'NOT_FOUND', message: expect.stringContaining('no job no-such-job')})
    const anonymous = await fetch(`${service.url}/nothing-here`)
    expect(anonymous.status).toBe(401)
    expect(await jsonOf(anonymous)).toMatchObject({error: 'UNAUTHORIZED'})
    const route = await api('/nothing-here')
    expect(route.status).toBe(404)
    expect(await jsonOf(route)).toEqual({
      error: 'NOT_FOUND',
      message: 'no such endpoint: GET /nothing-here (paths are case-sensitive, without a trailing slash)',
    })
    const method = await api('/api/v1/backups', {method: 'DELETE'})
    expect(method.status).toBe(405)
    expect(await jsonOf(method)).toMatchObject({error: 'METHOD_NOT_ALLOWED'})
  })

  it('reports /health 503 naming storage when the backup directory is gone', async () => {
    const moved = `${backupDir}-moved`
    await fs.rename(backupDir, moved)
    try {
      const health = await fetch(`${service.url}/health`)
      expect(health.status).toBe(503)
      const body = await jsonOf(health)
      expect(body).toMatchObject({status: 'unavailable', checks: {postgres: {ok: true}, storage: {ok: false}}})
      expect(body.checks.storage.error).toMatch(/does not exist/)
      // Issue 11 hole 8: reading the API during the outage is a 503 naming the cause, not a masked 500.
      for (const route of ['/api/v1/backups', '/api/v1/backups/latest', '/api/v1/backups/latest/download']) {
        const response = await api(route)
        expect([route, response.status]).toEqual([route, 503])
        expect(await jsonOf(response)).toEqual({
          error: 'STORAGE_UNAVAILABLE',
          message: `storage (local) unavailable: backup directory ${backupDir} does not exist (check BACKUP_LOCAL_DIR)`,
        })
      }

      expect((await fetch(`${service.url}/info`)).status).toBe(503)
    } finally {
      await fs.rename(moved, backupDir)
    }
  })

  it('reports /health 503 naming PostgreSQL when it is stopped, and a failed job with the cause in words', async () => {
    await cluster.stop('fast')
    try {
      const health = await fetch(`${service.url}/health`)
      expect(health.status).toBe(503)
      const body = await jsonOf(health)
      expect(body).toMatchObject({status: 'unavailable', checks: {postgres: {ok: false}, storage: {ok: true}}})
      expect(body.checks.postgres.error).toMatch(/cannot connect to PostgreSQL.*connection refused/)

      const post = await api('/api/v1/backups', {method: 'POST'})
      expect(post.status).toBe(202)
      const job = await jobWhen((await jsonOf(post)).jobId, (status) => status === 'failed' || status === 'succeeded')
      expect(job.status).toBe('failed')
      expect(job.errorMessage).toMatch(/connection refused/)
      expect(job.errorMessage).not.toContain(cluster.password)
    } finally {
      await cluster.start()
    }

    expect((await fetch(`${service.url}/health`)).status).toBe(200)
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toMatch(/^dbb_backups_total\{outcome="failed",triggered_by="api",service="dbb"\} 1$/m)
  })

  it('logs one access line per request, without the token or the database password; probes (/health, /metrics) only at debug', async () => {
    const before = log.lines().filter((line) => line.event === 'http.request').length
    await fetch(`${service.url}/health`)
    await api('/api/v1/backups')
    await fetch(`${service.url}/metrics`)
    await fetch(`${service.url}/info`)
    const lines = log.lines().filter((line) => line.event === 'http.request').slice(before)
    expect(lines.map((line) => [line.method, line.path, line.status])).toEqual([
      ['GET', '/api/v1/backups', 200],
      ['GET', '/info', 200],
    ])
    expect(log.text()).not.toContain(TOKEN)
    expect(log.text()).not.toContain(cluster.password)
  })
})
