import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import * as path from 'node:path'

import type {RunningService} from '../../src/server/service'
import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {captureLogger, startApiService} from '../helpers/serve'

const TOKEN = 'reliability-rest-token-0123456789abcdef'
const PLANTED = 'PLANTED-OUTSIDE-THE-BACKUP-DIRECTORY'

interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/**
 * Bad input against every endpoint of the REST API (issue 8), over real HTTP. Requests go through
 * node:http with the path sent byte for byte (fetch would normalise `..` and reject odd headers).
 * Every answer must be a 401/400/404 JSON error — never a 500 — and nothing outside the backup
 * directory may ever be served: a file and a complete-looking backup are planted beside it.
 */
describe('REST API bad input (real HTTP, real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let root: string
  let backupDir: string
  let service: RunningService
  let log: ReturnType<typeof captureLogger>
  let realId: string

  function request(method: string, urlPath: string, headers: Record<string, string> = {}): Promise<RawResponse> {
    const {port} = new URL(service.url)
    return new Promise((resolve, reject) => {
      const outgoing = http.request({host: '127.0.0.1', port, method, path: urlPath, headers}, (response) => {
        let body = ''
        response.setEncoding('latin1').on('data', (chunk: string) => (body += chunk))
        response.on('end', () => resolve({status: response.statusCode ?? 0, headers: response.headers, body}))
      })
      outgoing.on('error', reject)
      outgoing.end()
    })
  }

  function expectJsonError(response: RawResponse, statuses: number[], what: string): void {
    expect([what, statuses.includes(response.status)]).toEqual([what, true])
    expect(response.headers['content-type']).toMatch(/^application\/json/)
    const body = JSON.parse(response.body)
    expect(body).toEqual({error: expect.stringMatching(/^[A-Z_]+$/), message: expect.any(String)})
    expect(response.body).not.toContain(PLANTED)
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 500)
    root = await tempDir('dbb-rest-')
    backupDir = path.join(root, 'backups')
    await fs.mkdir(backupDir)
    const run = await runCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir})
    expect(run.code).toBe(0)
    realId = JSON.parse(run.stdout).metadata.id
    // Outside the backup directory: a file, and a copy of a real backup (dump + sidecar) under another id.
    await fs.writeFile(path.join(root, 'outside.sql.gz'), PLANTED)
    const sidecar = JSON.parse(await fs.readFile(path.join(backupDir, `${realId}.meta.json`), 'utf8'))
    const outsideId = 'backup_20200101T000000Z.sql.gz'
    await fs.writeFile(path.join(root, outsideId), PLANTED)
    await fs.writeFile(path.join(root, `${outsideId}.meta.json`), JSON.stringify({...sidecar, id: outsideId, sizeBytes: PLANTED.length}))

    log = captureLogger()
    // Hundreds of wrong tokens on purpose, from one address: the lockout (its own test, rest-token-guessing) would answer 429.
    service = await startApiService(cluster, 'shop', backupDir, {token: TOKEN, logger: log.logger, tokenGuessLimit: {failures: 1_000_000, windowMs: 60_000}})
  })

  afterAll(async () => {
    await service?.shutdown('tests done')
    await cluster?.destroy()
    await fs.rm(root, {recursive: true, force: true})
  })

  const endpoints: [string, string][] = [
    ['POST', '/api/v1/backups'],
    ['GET', '/api/v1/backups'],
    ['GET', '/api/v1/backups/latest'],
    ['GET', '/api/v1/backups/jobs'],
    ['GET', '/api/v1/backups/jobs/00000000-0000-0000-0000-000000000000'],
    ['GET', '/api/v1/backups/backup_20261121T030000Z.sql.gz/download'],
    ['GET', '/api/v1/backups/latest/download'],
    ['HEAD', '/api/v1/backups/latest/download'],
    ['DELETE', '/api/v1/backups'],
    ['GET', '/api/v1/no-such-endpoint'],
    ['GET', '/api'],
  ]

  const badCredentials: [string, Record<string, string>, string][] = [
    ['no token', {}, ''],
    ['a wrong token', {Authorization: 'Bearer wrong-token-0123456789abcdef'}, ''],
    ['the token with a character more', {Authorization: `Bearer ${TOKEN}x`}, ''],
    ['the token in the query string', {}, `?access_token=${TOKEN}`],
    ['the token in the query string and the header', {Authorization: `Bearer ${TOKEN}`}, `?access_token=${TOKEN}`],
    ['"Bearer" without a token', {Authorization: 'Bearer'}, ''],
    ['"Bearer" and spaces', {Authorization: 'Bearer    '}, ''],
    ['Basic credentials', {Authorization: `Basic ${Buffer.from(`dbb:${TOKEN}`).toString('base64')}`}, ''],
    ['another scheme', {Authorization: `Token ${TOKEN}`}, ''],
    ['the token without a scheme', {Authorization: TOKEN}, ''],
    ['the token and trailing garbage', {Authorization: `Bearer ${TOKEN} extra`}, ''],
    ['a 10 KB header', {Authorization: `Bearer ${'a'.repeat(10_240)}`}, ''],
    ['non-ASCII bytes', {Authorization: `Bearer ${Buffer.from('tökén-ünïcödé-0123456789', 'utf8').toString('latin1')}`}, ''],
  ]

  it.each(badCredentials)('every API endpoint answers 401 JSON to %s, and nothing starts', async (_what, headers, query) => {
    for (const [method, url] of endpoints) {
      const response = await request(method, `${url}${query}`, headers)
      expect([method, url, response.status]).toEqual([method, url, 401])
      expect(response.headers['www-authenticate']).toMatch(/^Bearer realm="dbb"/)
      if (method !== 'HEAD') expectJsonError(response, [401], `${method} ${url}`)
    }

    const jobs = await request('GET', '/api/v1/backups/jobs', {Authorization: `Bearer ${TOKEN}`})
    expect(JSON.parse(jobs.body)).toEqual([])
    expect(log.text()).not.toContain(TOKEN)
  })

  const badIds = [
    '..',
    '..%2F..%2F..%2Fetc%2Fpasswd',
    '%2e%2e%2f',
    '%2e%2e%2foutside.sql.gz',
    '%2E%2E%2Fbackup_20200101T000000Z.sql.gz',
    '..%2Fbackup_20200101T000000Z.sql.gz',
    '..%5Cbackup_20200101T000000Z.sql.gz',
    'backups%2Fbackup_20261121T030000Z.sql.gz',
    '%00',
    'backup_20261121T030000Z.sql.gz%00',
    'backup_20261121T030000Z.sql.gz%00.meta.json',
    'x'.repeat(10_240),
    `backup_20261121T030000Z${'9'.repeat(10_000)}.sql.gz`,
    '%zz',
    '%E0%A4%A',
    '%C0%AE%C0%AE%2F',
    'backup_20261121T030000Z.sql.gz.meta.json',
    '%20backup_20261121T030000Z.sql.gz',
  ]

  it.each(badIds.map((id) => [id.length > 60 ? `${id.slice(0, 40)}… (${id.length} chars)` : id, id]))(
    'download of id %s: 400/404 JSON, never 500, never a byte from outside',
    async (_label, id) => {
      const response = await request('GET', `/api/v1/backups/${id}/download`, {Authorization: `Bearer ${TOKEN}`})
      expectJsonError(response, [400, 404], id)
      const job = await request('GET', `/api/v1/backups/jobs/${id}`, {Authorization: `Bearer ${TOKEN}`})
      expectJsonError(job, [400, 404], `job ${id}`)
    },
  )

  it('raw traversal paths (not encoded) never leave the API: 400/404 JSON', async () => {
    for (const url of [
      '/api/v1/backups/../../outside.sql.gz/download',
      '/api/v1/backups/../../../../etc/passwd',
      '/api/v1/../../outside.sql.gz',
      '/../outside.sql.gz',
      '/api/v1/backups//download',
      '/api/v1/backups/./latest/download',
    ]) {
      const response = await request('GET', url, {Authorization: `Bearer ${TOKEN}`})
      expectJsonError(response, [400, 404], url)
    }
  })

  it('unknown but well-formed ids: 404 JSON naming the id, including one that exists only outside the directory', async () => {
    for (const id of ['backup_20200101T000000Z.sql.gz', 'backup_20991231T235959Z-9999.sql.gz', 'otherdb_20200101T000000Z.sql.gz', 'backup_20200101T000000Z.tar.gz']) {
      const response = await request('GET', `/api/v1/backups/${id}/download`, {Authorization: `Bearer ${TOKEN}`})
      expectJsonError(response, [404], id)
      expect(JSON.parse(response.body).message).toContain('not found')
    }

    const job = await request('GET', '/api/v1/backups/jobs/not-a-job', {Authorization: `Bearer ${TOKEN}`})
    expectJsonError(job, [404], 'unknown job')
  })

  it('the real backup still downloads (the checks above did not just refuse everything)', async () => {
    const response = await request('GET', `/api/v1/backups/${realId}/download`, {Authorization: `Bearer ${TOKEN}`})
    expect(response.status).toBe(200)
    expect(response.body.length).toBeGreaterThan(100)
    expect(log.lines().filter((line) => line.event === 'http.error')).toEqual([])
  })
})
