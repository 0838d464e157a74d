import type {Context} from 'koa'

import {BackupListing, ListOptions, resolveBackup, scanBackups} from '../../backup/metadata'
import {drillsOf} from '../../drill/result'
import {listedBackups} from '../../backup/table'
import {databasePrefix, isBackupId, parseBackupId} from '../../backup/naming'
import {CODECS, codecOfKey} from '../../compress/codecs'
import {NotFoundError} from '../../errors'
import {printableExcerpt} from '../../format'
import type {AppDependencies} from '../app'
import {startAcrossReplicas} from '../job-lock'
import {decideRange} from '../range'
import type {Route} from './route'

export const API_PREFIX = '/api/v1'

/** The API under /api/v1: every route needs the API token. */
export function backupRoutes(deps: AppDependencies): Route[] {
  const listOptions = {prefix: deps.namePrefix, cache: deps.sidecarCache}
  // DB_NAMES (issue 20): `?db=NAME` is one database's backups (its latest, its downloads); without it the list holds every database's.
  const optionsFor = (ctx: Context): ListOptions & {prefix: string} =>
    typeof ctx.query.db === 'string' ? {...listOptions, prefix: databasePrefix(deps.namePrefix, ctx.query.db)} : listOptions
  // Across replicas: the job lock is taken before answering, and handed to the job (src/server/job-lock.ts).
  const startBackup = startAcrossReplicas(deps.jobLock, () => deps.jobs.inFlight(), (lease) => deps.jobs.start('api', lease))

  return [
    {
      method: 'POST',
      path: `${API_PREFIX}/backups`,
      auth: 'token',
      async handler(ctx) {
        const result = await startBackup(undefined)
        if (!result.started) {
          ctx.status = 409
          ctx.body =
            'held' in result
              ? {error: 'BACKUP_IN_PROGRESS', message: busyElsewhere(deps), jobId: null, job: null}
              : {
                  error: 'BACKUP_IN_PROGRESS',
                  message: `a backup is already in flight (job ${result.running.jobId}); follow it at ${API_PREFIX}/backups/jobs/${result.running.jobId}`,
                  jobId: result.running.jobId,
                  job: result.running,
                }
          return
        }

        ctx.status = 202
        ctx.set('Location', `${API_PREFIX}/backups/jobs/${result.job.jobId}`)
        ctx.body = result.job
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups`,
      auth: 'token',
      async handler(ctx) {
        // Damaged and unreadable backups are listed with their status and cause, never hidden.
        const listing = await listFor(ctx, deps, optionsFor(ctx))
        ctx.body = listedBackups(listing, await drillsOf(deps.storage, listing))
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups/jobs`,
      auth: 'token',
      handler(ctx) {
        ctx.body = deps.jobs.list()
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups/jobs/:jobId`,
      auth: 'token',
      handler(ctx) {
        const {jobId} = ctx.params
        const job = deps.jobs.get(jobId)
        if (!job) ctx.throw(404, `no job ${printableExcerpt(jobId)} (the newest 100 jobs are kept)`, {code: 'NOT_FOUND'})
        ctx.body = job
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups/latest`,
      auth: 'token',
      async handler(ctx) {
        ctx.body = await resolveBackup(deps.storage, 'latest', optionsFor(ctx))
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/backups/:id/download`,
      auth: 'token',
      async handler(ctx) {
        await download(ctx, ctx.params.id, deps, optionsFor(ctx))
      },
    },
  ]
}

/** The replica job lock is held by another session: a drill of this service, or any job of another replica. */
export function busyElsewhere(deps: AppDependencies): string {
  const drill = deps.drills?.inFlight()
  if (drill) return `a restore drill is running here (job ${drill.jobId}); backups and drills of a database never overlap: try again when it has finished`
  return 'another dbb replica is running a backup or drill of this database; try again when it has finished'
}

/**
 * Streams a dump straight from storage: nothing is buffered, `Content-Length` comes from the
 * sidecar, the ETag is the sha256 (so a client can verify what it got), and a `Range` request
 * (with `If-Range` holding that ETag) resumes an interrupted download.
 */
async function download(ctx: Context, reference: string, deps: AppDependencies, listOptions: {prefix: string}): Promise<void> {
  // The id is a storage key: validate its shape before anything touches storage.
  if (reference !== 'latest' && !isBackupId(reference)) {
    ctx.throw(400, `"${printableExcerpt(reference)}" is not a backup id (expected latest or e.g. backup_20261121T030000Z.sql.gz)`, {
      code: 'INVALID_BACKUP_ID',
    })
  }

  const backup = await resolveBackup(deps.storage, reference, listOptions)
  if (!ownedPrefix(parseBackupId(backup.id)?.prefix, deps)) throw new NotFoundError(`backup ${reference} not found`)
  const etag = `"${backup.sha256}"`
  const size = backup.sizeBytes
  ctx.set('ETag', etag)
  ctx.set('Accept-Ranges', 'bytes')
  ctx.set('Last-Modified', new Date(backup.createdAt).toUTCString())
  ctx.attachment(backup.id, {type: 'attachment'})
  if (matchesEtag(ctx.get('If-None-Match'), etag)) {
    ctx.status = 304
    return
  }

  const ifRange = ctx.get('If-Range')
  const range = ifRange && ifRange !== etag ? {kind: 'full' as const} : decideRange(ctx.get('Range'), size)
  if (range.kind === 'unsatisfiable') {
    ctx.throw(416, `the requested range is outside the ${size} bytes of ${backup.id}`, {headers: {'Content-Range': `bytes */${size}`}})
  }

  const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1]
  if (ctx.method !== 'HEAD' && size > 0) ctx.body = await deps.storage.get(backup.id, range.kind === 'partial' ? {start, end} : {})
  // Set after the body: assigning a stream to ctx.body clears Content-Length and the type.
  ctx.status = range.kind === 'partial' ? 206 : 200
  ctx.type = CODECS[codecOfKey(backup.id) ?? 'gzip'].contentType
  ctx.length = size === 0 ? 0 : end - start + 1
  if (range.kind === 'partial') ctx.set('Content-Range', `bytes ${start}-${end}/${size}`)
}

function matchesEtag(header: string, etag: string): boolean {
  return header !== '' && (header.trim() === '*' || header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === etag))
}

/** The backups GET /backups lists: this prefix's; with DB_NAMES and no `?db`, those of every database (and the globals) too. */
async function listFor(ctx: Context, deps: AppDependencies, options: ListOptions & {prefix: string}): Promise<BackupListing> {
  if (!deps.severalDatabases || typeof ctx.query.db === 'string') return scanBackups(deps.storage, options)
  const all = await scanBackups(deps.storage, {cache: deps.sidecarCache})
  const mine = (entry: {id: string}) => ownedPrefix(parseBackupId(entry.id)?.prefix, deps)
  return {...all, backups: all.backups.filter(mine), damaged: all.damaged.filter(mine)}
}

/** Whether a backup of this prefix is this service's: its own prefix, or with DB_NAMES one of its databases' (or globals') prefixes. */
function ownedPrefix(prefix: string | undefined, deps: AppDependencies): boolean {
  return prefix === deps.namePrefix || (Boolean(deps.severalDatabases) && prefix !== undefined && prefix.startsWith(`${deps.namePrefix}_`))
}
