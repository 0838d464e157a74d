import {parseDuration} from '../duration'
import {DEFAULT_BACKUP_INTERVAL} from '../settings'
import {ScheduleConfig, defineSection, scheduleIssues, scheduleOf} from './fields'

/** Sections of `dbb serve`: the HTTP API and the logical backup schedule. */

export interface ServerConfig {
  apiToken: string
  port: number
  host: string
  shutdownGraceMs: number
}

export type {ScheduleConfig} from './fields'

export const DEFAULT_BACKUP_INTERVAL_MS = parseDuration(DEFAULT_BACKUP_INTERVAL) as number

export const server = defineSection(['API_TOKEN', 'HTTP_PORT', 'HTTP_HOST', 'SHUTDOWN_GRACE'], (object) =>
  object.transform(
    (data): ServerConfig => ({apiToken: data.API_TOKEN, port: data.HTTP_PORT, host: data.HTTP_HOST, shutdownGraceMs: data.SHUTDOWN_GRACE}),
  ),
)

// BACKUP_INTERVAL has no declared default: DEFAULT_BACKUP_INTERVAL applies only when BACKUP_SCHEDULE is unset, see below.
export const schedule = defineSection(['BACKUP_INTERVAL', 'BACKUP_SCHEDULE', 'TZ'], (object) =>
  object
    .superRefine((data, ctx) =>
      scheduleIssues({interval: data.BACKUP_INTERVAL, cron: data.BACKUP_SCHEDULE, timezone: data.TZ}, {interval: 'BACKUP_INTERVAL', cron: 'BACKUP_SCHEDULE', example: 'BACKUP_INTERVAL=24h, or BACKUP_SCHEDULE="0 3 * * *"'}, ctx),
    )
    .transform((data) => scheduleOf({interval: data.BACKUP_INTERVAL, cron: data.BACKUP_SCHEDULE, timezone: data.TZ}, DEFAULT_BACKUP_INTERVAL_MS) as ScheduleConfig),
)
