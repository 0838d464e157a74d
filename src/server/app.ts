import Koa from 'koa'

import type {BackupMetadata} from '../backup/metadata'
import type {DatabaseConfig} from '../config'
import type {RetentionRules} from '../backup/retention'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import type {JobRegistry} from './jobs'
import type {ServiceMetrics} from './metrics'
import {accessLog} from './middleware/access-log'
import {requireApiToken} from './middleware/auth'
import {errorHandler} from './middleware/error-handler'
import {backupRoutes} from './routes/backups'
import {publicRoutes} from './routes/public'
import type {ScheduleDescription} from './scheduler'

/** Everything the HTTP layer reads; built once by the service (src/server/service.ts) or by a test. */
export interface AppDependencies {
  apiToken: string
  storage: StorageBackend
  database: DatabaseConfig
  /** Backups of this service are the ones with this name prefix (several databases may share a location). */
  namePrefix: string
  retention: RetentionRules
  jobs: JobRegistry
  metrics: ServiceMetrics
  logger: Logger
  /** Sidecars are immutable: read each once per process. */
  sidecarCache: Map<string, BackupMetadata>
  pgDumpVersion: string
  schedule: {describe(): ScheduleDescription; nextRunAt(): Date | undefined}
  /** True once shutdown has begun: new backups are refused with 503. */
  isShuttingDown?: () => boolean
  /** Per-check limit of /health (default 5 s). */
  healthTimeoutMs?: number
  now?: () => Date
}

/**
 * The Koa app, not listening (tests drive it over a socket they open; `dbb serve` listens). The one
 * place the middleware order lives:
 *  1. access log — outermost, so it sees the final status of every request, errors included;
 *  2. error handler — every error below becomes `{error, message}` with the right status;
 *     then, once shutdown has begun, 503 for requests on connections still open;
 *  3. /health, /info, /metrics — no auth (probes and Prometheus);
 *  4. bearer-token auth for everything under /api/ — before routing, so an unauthenticated client
 *     cannot even learn which API paths exist;
 *  5. the API routes; anything unmatched falls through to a 404 from the error handler.
 */
export function createApp(deps: AppDependencies): Koa {
  const app = new Koa()
  app.proxy = false
  // Errors that escape the chain (a download stream failing after the headers went out) are
  // logged here instead of Koa's default console output.
  app.on('error', (error: Error) => {
    deps.logger.warn({event: 'http.stream_error', error: error.message}, 'response failed after it started')
  })

  const publicRouter = publicRoutes(deps)
  const apiRouter = backupRoutes(deps)
  const authenticate = requireApiToken(deps.apiToken)

  app.use(accessLog(deps.logger))
  app.use(errorHandler(deps.logger))
  app.use(async (ctx, next) => {
    // The listener is closed at shutdown, but keep-alive connections can still carry requests:
    // refuse them and close the connection, so clients move on to another instance.
    if (!deps.isShuttingDown?.()) return next()
    ctx.throw(503, 'the service is shutting down', {expose: true, headers: {Connection: 'close'}})
  })
  app.use(publicRouter.routes())
  app.use(publicRouter.allowedMethods())
  app.use(async (ctx, next) => (ctx.path === '/api' || ctx.path.startsWith('/api/') ? authenticate(ctx, next) : next()))
  app.use(apiRouter.routes())
  app.use(apiRouter.allowedMethods())
  return app
}
