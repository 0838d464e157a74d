import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import * as os from 'node:os'
import * as path from 'node:path'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {pollUntil} from '../helpers/fault-invariants'
import {PgCluster, freePort, startPostgres} from '../helpers/postgres'

const TOKEN = 'reliability-load-token-0123456789abcdef'
/** Bounded: 10 s by default (LOAD_SECONDS to change), loopback only. */
const SECONDS = Number(process.env.LOAD_SECONDS ?? 10)
const CLIENTS = 8
const PATHS = ['/api/v1/backups', '/health', '/info'] as const

interface Sample {
  path: string
  ms: number
  ok: boolean
  inFlight?: boolean
}

/**
 * Issue 8, "Load": a fixed number of keep-alive clients hammer GET /api/v1/backups, /health and
 * /info of a real `dbb serve` process while backups run back to back (a new one is POSTed as soon
 * as the previous finishes). Asserted: zero errors, and backups really were running. Throughput and
 * p50/p99 latencies are printed and written to $TMPDIR/dbb-load-results.json for RELIABILITY.md.
 */
describe('load: read endpoints of dbb serve while backups run', () => {
  let cluster: PgCluster
  let dir: string

  beforeAll(async () => {
    cluster = await startPostgres()
    await cluster.psql('CREATE DATABASE big')
    // ≈ 25 MB of SQL: each backup streams for a second or more on this machine.
    await cluster.psql(
      `CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload
       FROM generate_series(1, 180000) g`,
      'big',
    )
    dir = await tempDir('dbb-load-')
    // Some history, so GET /api/v1/backups lists real sidecars.
    for (let i = 0; i < 3; i++) expect((await runCli(['backup', 'run', '--no-prune'], {...cluster.dbbEnv('big'), BACKUP_LOCAL_DIR: dir})).code).toBe(0)
  }, 120_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  it(`${CLIENTS} keep-alive clients for ${SECONDS} s: no errors`, async () => {
    const port = await freePort()
    const child: ChildProcess = startCli(['serve'], {
      ...cluster.dbbEnv('big'),
      BACKUP_LOCAL_DIR: dir,
      API_TOKEN: TOKEN,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      RETENTION_DAYS: '0',
      BACKUPS_TO_RETAIN: '5',
      LOG_LEVEL: 'warn',
    })
    const result = collect(child)
    const agent = new http.Agent({keepAlive: true, maxSockets: CLIENTS + 1})
    const get = (urlPath: string, method = 'GET') =>
      new Promise<{status: number; body: string}>((resolve, reject) => {
        const request = http.request(
          {host: '127.0.0.1', port, path: urlPath, method, agent, headers: {Authorization: `Bearer ${TOKEN}`}},
          (response) => {
            let body = ''
            response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
            response.on('end', () => resolve({status: response.statusCode ?? 0, body}))
          },
        )
        request.on('error', reject)
        request.end()
      })

    try {
      await pollUntil(async () => (await get('/health').catch(() => ({status: 0}))).status === 200, 'dbb serve to answer')
      const deadline = Date.now() + SECONDS * 1000
      let backupsStarted = 0
      // Keeps a backup in flight for the whole window.
      const feeder = (async () => {
        while (Date.now() < deadline) {
          const {status} = await get('/api/v1/backups', 'POST')
          if (status === 202) backupsStarted += 1
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      })()
      const samples: Sample[] = []
      const errors: string[] = []
      const clients = Array.from({length: CLIENTS}, async (_, index) => {
        for (let n = index; Date.now() < deadline; n++) {
          const urlPath = PATHS[n % PATHS.length]
          const started = process.hrtime.bigint()
          try {
            const {status, body} = await get(urlPath)
            const ms = Number(process.hrtime.bigint() - started) / 1e6
            const ok = status === 200
            if (!ok) errors.push(`${urlPath} ${status} ${body.slice(0, 200)}`)
            samples.push({path: urlPath, ms, ok, inFlight: urlPath === '/info' ? JSON.parse(body).backup.jobInFlight !== null : undefined})
          } catch (error) {
            errors.push(`${urlPath} ${String(error)}`)
          }
        }
      })
      await Promise.all([...clients, feeder])

      const report = summarize(samples, SECONDS, backupsStarted)
      console.log(`load results (${CLIENTS} clients, ${SECONDS} s):\n${JSON.stringify(report, null, 2)}`)
      await fs.writeFile(path.join(os.tmpdir(), 'dbb-load-results.json'), `${JSON.stringify(report, null, 2)}\n`)
      expect(errors).toEqual([])
      expect(samples.length).toBeGreaterThan(100)
      expect(backupsStarted).toBeGreaterThan(0)
      // Most of the window had a backup running (the /info answers say so).
      const infos = samples.filter((sample) => sample.inFlight !== undefined)
      expect(infos.filter((sample) => sample.inFlight).length / infos.length).toBeGreaterThan(0.5)
    } finally {
      agent.destroy()
      child.kill('SIGTERM')
    }

    const {code, stderr} = await result
    expect(code).toBe(0)
    expect(stderr).not.toMatch(/"event":"http\.error"/)
  }, 120_000)
})

function summarize(samples: Sample[], seconds: number, backupsStarted: number) {
  const byPath = Object.fromEntries(
    PATHS.map((urlPath) => {
      const times = samples
        .filter((sample) => sample.path === urlPath)
        .map((sample) => sample.ms)
        .sort((a, b) => a - b)
      const at = (q: number) => Number((times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0).toFixed(1))
      return [urlPath, {requests: times.length, perSecond: Math.round(times.length / seconds), p50Ms: at(0.5), p99Ms: at(0.99), maxMs: at(1)}]
    }),
  )
  return {seconds, clients: CLIENTS, totalRequests: samples.length, perSecond: Math.round(samples.length / seconds), backupsStarted, byPath}
}
