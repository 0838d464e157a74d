import {z} from 'zod'

import {cronProblem, defineSection, duration, intInRange, isTimeZone, requiredText, scheduleInterval} from './fields'

/** Sections of `dbb serve`: the HTTP API and the logical backup schedule. */

export interface ServerConfig {
  apiToken: string
  port: number
  host: string
  shutdownGraceMs: number
}

export type ScheduleConfig = {kind: 'interval'; intervalMs: number} | {kind: 'cron'; expression: string; timezone?: string}

export const DEFAULT_BACKUP_INTERVAL_MS = 24 * 3600 * 1000
const MIN_API_TOKEN_LENGTH = 16

export const server = defineSection(
  {
    API_TOKEN: requiredText().refine((token) => token.length >= MIN_API_TOKEN_LENGTH, {
      message: `must be at least ${MIN_API_TOKEN_LENGTH} characters; generate one with: openssl rand -hex 32`,
    }),
    HTTP_PORT: intInRange(0, 65_535).default(8080),
    HTTP_HOST: z.string().default('0.0.0.0'),
    SHUTDOWN_GRACE: duration.default(30_000),
  },
  (object) =>
    object.transform(
      (data): ServerConfig => ({apiToken: data.API_TOKEN, port: data.HTTP_PORT, host: data.HTTP_HOST, shutdownGraceMs: data.SHUTDOWN_GRACE}),
    ),
)

export const schedule = defineSection(
  {
    // No default here: the default (24h) applies only when BACKUP_SCHEDULE is unset, see below.
    BACKUP_INTERVAL: scheduleInterval.optional(),
    BACKUP_SCHEDULE: z.string().optional(),
    // Only read with BACKUP_SCHEDULE: a container's TZ must not stop an interval-scheduled serve.
    TZ: z.string().optional(),
  },
  (object) =>
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
