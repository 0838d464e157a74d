import type {Context} from 'koa'

import {resolveBackup} from '../../backup/metadata'
import {isBackupId} from '../../backup/naming'
import {readDrillResult} from '../../drill/result'
import {NotFoundError} from '../../errors'
import {printableExcerpt} from '../../format'
import type {AppDependencies} from '../app'
import {API_PREFIX, busyElsewhere} from './backups'
import type {DrillJob} from '../drills'
import {startAcrossReplicas} from '../job-lock'
import type {Job} from '../jobs'
import type {Route} from './route'

/**
 * Restore drills over the API (token only): start one (202, or 409 while a drill runs here or a
 * backup or drill of the database runs on any replica), follow its job, read a backup's last result.
 */
export function drillRoutes(deps: AppDependencies): Route[] {
  const listOptions = {prefix: deps.namePrefix, cache: deps.sidecarCache}
  const startDrill = startAcrossReplicas<DrillJob | Job, string>(
    deps.jobLock,
    () => deps.drills?.inFlight() ?? deps.jobs.inFlight(),
    (lease, reference) => deps.drills!.start('api', reference, lease),
  )
  const start = async (ctx: Context, wanted: string) => {
    if (!deps.drills) ctx.throw(503, 'restore drills are not available in this service', {code: 'DRILLS_UNAVAILABLE'})
    const result = await startDrill(wanted)
    if (!result.started) {
      ctx.status = 409
      const running = 'held' in result ? undefined : result.running
      const what = running && 'kind' in running ? 'drill' : 'backup'
      ctx.body = running
        ? {error: 'JOB_IN_PROGRESS', message: `a ${what} is already in flight here (job ${running.jobId}); backups and drills of a database never overlap`, jobId: running.jobId}
        : {error: 'JOB_IN_PROGRESS', message: busyElsewhere(deps), jobId: null}
      return
    }

    ctx.status = 202
    ctx.set('Location', `${API_PREFIX}/drills/jobs/${result.job.jobId}`)
    ctx.body = result.job
  }

  const checkedId = (ctx: Context) => {
    const {id} = ctx.params as {id: string}
    if (id !== 'latest' && !isBackupId(id)) {
      ctx.throw(400, `"${printableExcerpt(id)}" is not a backup id (expected latest or e.g. backup_20261121T030000Z.sql.gz)`, {code: 'INVALID_BACKUP_ID'})
    }

    return id
  }

  return [
    {
      method: 'POST',
      path: `${API_PREFIX}/drills`,
      auth: 'token',
      async handler(ctx) {
        await start(ctx, 'latest')
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/backups/:id/drill`,
      auth: 'token',
      async handler(ctx) {
        await start(ctx, checkedId(ctx))
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups/:id/drill`,
      auth: 'token',
      async handler(ctx) {
        const backup = await resolveBackup(deps.storage, checkedId(ctx), listOptions)
        const result = await readDrillResult(deps.storage, backup.id)
        if (!result) throw new NotFoundError(`backup ${backup.id} was never drilled`)
        ctx.body = result
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/drills/jobs/:jobId`,
      auth: 'token',
      handler(ctx) {
        const {jobId} = ctx.params
        const job = deps.drills?.get(jobId)
        if (!job) ctx.throw(404, `no drill job ${printableExcerpt(jobId)} (the newest 20 are kept)`, {code: 'NOT_FOUND'})
        ctx.body = job
      },
    },
  ]
}
