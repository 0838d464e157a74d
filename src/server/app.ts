import Koa from 'koa'

import type {BackupMetadata} from '../backup/metadata'
import type {DatabaseConfig} from '../config'
import type {RetentionRules} from '../backup/retention'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import type {JobRegistry} from './jobs'
import type {ServiceMetrics} from './metrics'
import {accessLog} from './middleware/access-log'
import {type TokenGuessLimit, requireApiToken} from './middleware/auth'
import {errorHandler} from './middleware/error-handler'
import {backupRoutes} from './routes/backups'
import {drillRoutes} from './routes/drills'
import type {DrillJobs} from './drills'
import type {JobLock} from './job-lock'
import {publicRoutes} from './routes/public'
import {Route, denyUnmatchedWithoutToken, routerFor} from './routes/route'
import type {ScheduleDescription} from './scheduler'
import {markingOutages} from './storage-outages'

/** Everything the HTTP layer reads; built once by the service (src/server/service.ts) or by a test. */
export interface AppDependencies {
  apiToken: string
  storage: StorageBackend
  database: DatabaseConfig
  /** Backups of this service are the ones with this name prefix (several databases may share a location). */
  namePrefix: string
  /** DB_NAMES: the backups are those of every `<namePrefix>_<database>` prefix (and the globals); `?db=NAME` picks one database. */
  severalDatabases?: boolean
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
  /** Wrong tokens one client address may send before it is locked out (default TOKEN_GUESS_LIMIT). */
  tokenGuessLimit?: TokenGuessLimit
  /** Per-check limit of /health (default 5 s). */
  healthTimeoutMs?: number
  now?: () => Date
  // --- restore drills and replicas (issue 19) ---
  /** The drills of this service (POST /api/v1/drills …). */
  drills?: DrillJobs
  /** The replica job lock: API-started jobs take it before answering 202, so 409 holds across replicas. */
  jobLock?: JobLock
}

/** The app, and the routes it serves (what the route-spelling tests attack, route by route). */
export type ServiceApp = Koa & {readonly routes: readonly Route[]}

/** Every route of the HTTP API with its auth: the one declaration the router and the tests derive from. */
export function declaredRoutes(deps: AppDependencies): Route[] {
  return [...publicRoutes(deps), ...backupRoutes(deps), ...drillRoutes(deps)]
}

/**
 * The Koa app, not listening (tests drive it over a socket they open; `dbb serve` listens). The one
 * place the middleware order lives:
 *  1. access log — outermost, so it sees the final status of every request, errors included;
 *  2. error handler — every error below becomes `{error, message}` with the right status;
 *     then, once shutdown has begun, 503 for requests on connections still open;
 *  3. 405/OPTIONS answers for a known path asked with another method (after everything below);
 *  4. the routes, each behind the token check when it declares `auth: 'token'` (routes/route.ts):
 *     auth belongs to the route, not to a path prefix, so no spelling of a path sidesteps it;
 *     an address that sends too many wrong tokens is locked out (middleware/auth.ts);
 *  5. whatever no route served needs the token too before it learns 404/405, except a public path.
 * Storage failures in the routes are 503s with the backend's message (storage-outages.ts).
 */
export function createApp(deps: AppDependencies): ServiceApp {
  const app = new Koa()
  app.proxy = false
  // Errors that escape the chain (a download stream failing after the headers went out) are
  // logged here instead of Koa's default console output.
  app.on('error', (error: Error) => {
    deps.logger.warn({event: 'http.stream_error', error: error.message}, 'response failed after it started')
  })

  const routes = declaredRoutes({...deps, storage: markingOutages(deps.storage)})
  const authenticate = requireApiToken(deps.apiToken, {limit: deps.tokenGuessLimit, logger: deps.logger})
  const router = routerFor(routes, authenticate)

  app.use(accessLog(deps.logger))
  app.use(errorHandler(deps.logger))
  app.use(async (ctx, next) => {
    // The listener is closed at shutdown, but keep-alive connections can still carry requests:
    // refuse them and close the connection, so clients move on to another instance.
    if (!deps.isShuttingDown?.()) return next()
    // Another replica, or this one restarted, answers within seconds.
    ctx.throw(503, 'the service is shutting down', {expose: true, headers: {Connection: 'close', 'Retry-After': '5'}})
  })
  app.use(router.allowedMethods())
  app.use(router.routes())
  app.use(denyUnmatchedWithoutToken(routes, authenticate))
  return Object.assign(app, {routes})
}
