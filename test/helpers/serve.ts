import type {AddressInfo} from 'node:net'
import {Writable} from 'node:stream'

import {DatabasesConfig, loadConfig} from '../../src/config'
import {Logger, createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {ServiceApp, createApp} from '../../src/server/app'
import type {TokenGuessLimit} from '../../src/server/middleware/auth'
import {JobRegistry, JobWork} from '../../src/server/jobs'
import {ServiceMetrics} from '../../src/server/metrics'
import {RunningService, startService} from '../../src/server/service'
import type {StorageBackend} from '../../src/storage/contract'
import type {PgCluster} from './postgres'

/** A JSON pino logger whose lines are kept in memory, so tests can assert on what was logged. */
export function captureLogger(level = 'info'): {logger: Logger; lines: () => Record<string, unknown>[]; text: () => string} {
  const chunks: string[] = []
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'))
      callback()
    },
  })
  const logger = createLogger({format: 'json', level, destination})
  const text = () => chunks.join('')
  const lines = () =>
    text()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>)
  return {logger, lines, text}
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** A fake clock for the scheduler: time moves only when the test advances it. */
export class FakeClock {
  private current: number
  private timers: {at: number; callback: () => void; id: number}[] = []
  private nextId = 1

  constructor(start: Date) {
    this.current = start.getTime()
  }

  now = (): number => this.current

  setTimer = (callback: () => void, delayMs: number): (() => void) => {
    const id = this.nextId++
    this.timers.push({at: this.current + delayMs, callback, id})
    return () => {
      this.timers = this.timers.filter((timer) => timer.id !== id)
    }
  }

  /** Moves time forward, firing every timer that falls due on the way, in order. */
  advance(milliseconds: number): void {
    const target = this.current + milliseconds
    for (;;) {
      const due = this.timers.filter((timer) => timer.at <= target).sort((a, b) => a.at - b.at)[0]
      if (!due) break
      this.timers = this.timers.filter((timer) => timer.id !== due.id)
      this.current = Math.max(this.current, due.at)
      due.callback()
    }

    this.current = target
  }

  pendingTimers(): number {
    return this.timers.length
  }
}

/** A response's JSON body, typed loosely: tests assert its shape with expect(). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function jsonOf(response: Response | Promise<Response>): Promise<any> {
  return (await response).json()
}

/**
 * `dbb serve`'s service in-process for API tests: the real HTTP server on 127.0.0.1 (a free port),
 * the local backend in `backupDir`, retention defaults, and a cron schedule that only fires on New
 * Year so no scheduled run interferes with what a test triggers through the API.
 */
export async function startApiService(
  cluster: PgCluster,
  database: string,
  backupDir: string,
  options: {token: string; logger: Logger; healthTimeoutMs?: number; databases?: DatabasesConfig; tokenGuessLimit?: TokenGuessLimit},
): Promise<RunningService> {
  const settings = loadConfig(['database'], cluster.dbbEnv(database))
  return startService({
    config: {
      database: settings.database,
      namePrefix: 'backup',
      retention: {retentionDays: 7, orphanGraceMs: 24 * 3600 * 1000},
      server: {apiToken: options.token, port: 0, host: '127.0.0.1', shutdownGraceMs: 5000},
      schedule: {kind: 'cron', expression: '0 3 1 1 *', timezone: 'UTC'},
      databases: options.databases,
    },
    storage: new LocalBackend(backupDir),
    logger: options.logger,
    healthTimeoutMs: options.healthTimeoutMs,
    tokenGuessLimit: options.tokenGuessLimit,
  })
}

/**
 * createApp over a real socket on 127.0.0.1, with `storage` and otherwise inert dependencies: a job
 * registry whose work fails at once, PostgreSQL on a closed port (so /health reports it down).
 */
export async function serveApp(
  storage: StorageBackend,
  options: {token: string; logger: Logger; work?: JobWork; tokenGuessLimit?: TokenGuessLimit},
): Promise<{app: ServiceApp; base: string; port: number; close: () => Promise<void>}> {
  const app = createApp({
    apiToken: options.token,
    storage,
    database: {host: '127.0.0.1', port: 1, database: 'x', user: 'postgres'},
    namePrefix: 'backup',
    retention: {retentionDays: 7, orphanGraceMs: 1000},
    jobs: new JobRegistry({logger: options.logger, work: options.work ?? (() => Promise.reject(new Error('no backups in this test')))}),
    metrics: new ServiceMetrics({defaultMetrics: false}),
    logger: options.logger,
    sidecarCache: new Map(),
    pgDumpVersion: '15.18',
    schedule: {describe: () => ({kind: 'interval', interval: 'PT24H', intervalSeconds: 86_400}), nextRunAt: () => undefined},
    healthTimeoutMs: 2000,
    tokenGuessLimit: options.tokenGuessLimit,
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const {port} = server.address() as AddressInfo
  return {
    app,
    base: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
