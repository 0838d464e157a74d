import {BackupDrills, scanWithDrills} from '../../drill/result'
import {VERSION} from '../../version'
import type {AppDependencies} from '../app'
import {runHealthChecks} from '../health'
import type {Route} from './route'

/**
 * /health, /info and /metrics: public by design, for probes, dashboards and Prometheus. They carry
 * no data from the database: reachability, versions, schedule, and the newest backup's id and age
 * (ids are names, not contents; fetching a dump needs the token).
 */
export function publicRoutes(deps: AppDependencies): Route[] {
  const now = deps.now ?? (() => new Date())
  return [
    {
      method: 'GET',
      path: '/health',
      auth: 'public',
      probe: true,
      async handler(ctx) {
        const {healthy, checks} = await runHealthChecks({database: deps.database, storage: deps.storage, timeoutMs: deps.healthTimeoutMs})
        ctx.status = healthy ? 200 : 503
        ctx.set('Cache-Control', 'no-store')
        ctx.body = {status: healthy ? 'ok' : 'unavailable', checks}
      },
    },
    {
      method: 'GET',
      path: '/info',
      auth: 'public',
      async handler(ctx) {
        const {listing, drills} = await scanWithDrills(deps.storage, {prefix: deps.namePrefix, cache: deps.sidecarCache})
        const {backups, damaged} = listing
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
            // A damaged or unreadable backup is reported, never skipped silently. Its cause (paths, uids,
            // backend messages) is for the token holder: GET /api/v1/backups carries it.
            damagedBackups: damaged.map(({id, status}) => ({id, status})),
          },
          drill: describeDrills(drills, at, deps.drills?.inFlight()?.jobId ?? null),
        }
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      auth: 'public',
      probe: true,
      async handler(ctx) {
        const {contentType, body} = await deps.metrics.render()
        ctx.type = contentType
        ctx.body = body
      },
    },
  ]
}

/** /info's drill block: the last passed drill's age (what alerting reads) and the last drill's verdict. */
function describeDrills(drills: BackupDrills, at: Date, jobInFlight: string | null) {
  const finished = [...drills].filter(([, drill]) => drill.finishedAt !== undefined).sort(([, a], [, b]) => b.finishedAt!.localeCompare(a.finishedAt!))
  const passed = finished.find(([, drill]) => drill.status === 'passed')
  const [latest] = finished
  return {
    lastSuccessfulDrillBackupId: passed?.[0] ?? null,
    lastSuccessfulDrillAt: passed?.[1].finishedAt ?? null,
    lastSuccessfulDrillAgeSeconds: passed ? Math.max(0, Math.round((at.getTime() - Date.parse(passed[1].finishedAt!)) / 1000)) : null,
    lastDrillStatus: latest?.[1].status ?? null,
    jobInFlight,
  }
}
