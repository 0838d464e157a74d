import Router from '@koa/router'

import {scanBackups} from '../../backup/metadata'
import {withClient} from '../../db/connection'
import {errorMessage} from '../../errors'
import {VERSION} from '../../version'
import type {AppDependencies} from '../app'

type CheckResult = {ok: true; durationMs: number} | {ok: false; durationMs: number; error: string}

/** /health, /info and /metrics: unauthenticated, for probes, dashboards and Prometheus. */
export function publicRoutes(deps: AppDependencies): Router {
  const router = new Router()
  const timeoutMs = deps.healthTimeoutMs ?? 5000
  const now = deps.now ?? (() => new Date())

  router.get('/health', async (ctx) => {
    const [postgres, storage] = await Promise.all([
      check(() => withClient(deps.database, (client) => client.query('SELECT 1')), timeoutMs),
      check(() => deps.storage.health(), timeoutMs),
    ])
    const healthy = postgres.ok && storage.ok
    ctx.status = healthy ? 200 : 503
    ctx.set('Cache-Control', 'no-store')
    ctx.body = {status: healthy ? 'ok' : 'unavailable', checks: {postgres, storage: {backend: deps.storage.name, ...storage}}}
  })

  router.get('/info', async (ctx) => {
    const {backups, damaged} = await scanBackups(deps.storage, {prefix: deps.namePrefix, cache: deps.sidecarCache})
    const [newest] = backups
    const at = now()
    const inFlight = deps.jobs.inFlight()
    ctx.set('Cache-Control', 'no-store')
    ctx.body = {
      service: {name: 'dbb', version: VERSION},
      pgDump: {version: deps.pgDumpVersion},
      storage: {backend: deps.storage.name},
      retention: {
        retentionDays: deps.retention.retentionDays,
        backupsToRetain: deps.retention.backupsToRetain ?? null,
      },
      schedule: {...deps.schedule.describe(), nextRunAt: deps.schedule.nextRunAt()?.toISOString() ?? null},
      backup: {
        namePrefix: deps.namePrefix,
        lastSuccessfulBackupId: newest?.id ?? null,
        lastSuccessfulBackupAt: newest?.createdAt ?? null,
        lastSuccessfulBackupAgeSeconds: newest ? Math.max(0, Math.round((at.getTime() - Date.parse(newest.createdAt)) / 1000)) : null,
        jobInFlight: inFlight?.jobId ?? null,
        // A damaged or unreadable backup (newer than the last successful one or not) is reported, never skipped silently.
        damagedBackups: damaged.map(({id, status, cause}) => ({id, status, cause})),
      },
    }
  })

  router.get('/metrics', async (ctx) => {
    const {contentType, body} = await deps.metrics.render()
    ctx.type = contentType
    ctx.body = body
  })

  return router
}

/** Runs one health check with a time limit; its failure is reported, not thrown. */
async function check(probe: () => Promise<unknown>, timeoutMs: number): Promise<CheckResult> {
  const started = Date.now()
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    await Promise.race([probe(), timeout])
    return {ok: true, durationMs: Date.now() - started}
  } catch (error) {
    return {ok: false, durationMs: Date.now() - started, error: errorMessage(error)}
  } finally {
    clearTimeout(timer)
  }
}
