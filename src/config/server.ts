import {parseDuration} from '../duration'
import {DEFAULT_BACKUP_INTERVAL} from '../settings'
import {cronProblem, defineSection, isTimeZone} from './fields'

/** Sections of `dbb serve`: the HTTP API and the logical backup schedule. */

export interface ServerConfig {
  apiToken: string
  port: number
  host: string
  shutdownGraceMs: number
}

export type ScheduleConfig = {kind: 'interval'; intervalMs: number} | {kind: 'cron'; expression: string; timezone?: string}

export const DEFAULT_BACKUP_INTERVAL_MS = parseDuration(DEFAULT_BACKUP_INTERVAL) as number

export const server = defineSection(['API_TOKEN', 'HTTP_PORT', 'HTTP_HOST', 'SHUTDOWN_GRACE'], (object) =>
  object.transform(
    (data): ServerConfig => ({apiToken: data.API_TOKEN, port: data.HTTP_PORT, host: data.HTTP_HOST, shutdownGraceMs: data.SHUTDOWN_GRACE}),
  ),
)

// BACKUP_INTERVAL has no declared default: DEFAULT_BACKUP_INTERVAL applies only when BACKUP_SCHEDULE is unset, see below.
export const schedule = defineSection(['BACKUP_INTERVAL', 'BACKUP_SCHEDULE', 'TZ'], (object) =>
  object
    .superRefine((data, ctx) => {
      if (data.BACKUP_SCHEDULE === undefined) return
      if (data.BACKUP_INTERVAL !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['BACKUP_SCHEDULE'],
          message: 'cannot be combined with BACKUP_INTERVAL: set only one (BACKUP_INTERVAL=24h, or BACKUP_SCHEDULE="0 3 * * *")',
        })
        return
      }

      if (data.TZ !== undefined && !isTimeZone(data.TZ)) {
        ctx.addIssue({code: 'custom', path: ['TZ'], message: 'is not an IANA time zone name'})
        return
      }

      const problem = cronProblem(data.BACKUP_SCHEDULE, data.TZ)
      if (problem) ctx.addIssue({code: 'custom', path: ['BACKUP_SCHEDULE'], message: problem})
    })
    .transform(
      (data): ScheduleConfig =>
        data.BACKUP_SCHEDULE === undefined
          ? {kind: 'interval', intervalMs: data.BACKUP_INTERVAL ?? DEFAULT_BACKUP_INTERVAL_MS}
          : {kind: 'cron', expression: data.BACKUP_SCHEDULE.trim(), timezone: data.TZ},
    ),
)
