import type {DatabaseConfig} from './core'
import {ScheduleConfig, defineSection, scheduleIssues, scheduleOf} from './fields'
import {parseDuration} from '../duration'
import {DEFAULT_DRILL_MAX_AGE} from '../settings'

export const DEFAULT_DRILL_MAX_AGE_MS = parseDuration(DEFAULT_DRILL_MAX_AGE) as number

/**
 * Restore drills (issue 19): where they restore (DRILL_DB_* over DB_*), when `dbb serve` runs them
 * (DRILL_INTERVAL or DRILL_SCHEDULE; off when neither is set), and how old the last passed drill
 * may be before `dbb check` fails (DRILL_MAX_AGE).
 */
export interface DrillConfig {
  /** Overrides of DB_*: the drill server. Applied by drillServer(). */
  host?: string
  port?: number
  user?: string
  password?: string
  schedule?: ScheduleConfig
  maxAgeMs: number
  /** The OS user a physical drill's private server runs as when dbb runs as root. */
  osUser: string
  /** What `dbb serve` drills by schedule and for "latest": logical or base (physical) backups. */
  type: 'logical' | 'base'
}

export const drill = defineSection(
  ['DRILL_DB_HOST', 'DRILL_DB_PORT', 'DRILL_DB_USER', 'DRILL_DB_PASSWORD', 'DRILL_INTERVAL', 'DRILL_SCHEDULE', 'DRILL_MAX_AGE', 'DRILL_OS_USER', 'DRILL_TYPE', 'TZ'],
  (object) =>
    object
      .superRefine((data, ctx) =>
        scheduleIssues(
          {interval: data.DRILL_INTERVAL, cron: data.DRILL_SCHEDULE, timezone: data.TZ},
          {interval: 'DRILL_INTERVAL', cron: 'DRILL_SCHEDULE', example: 'DRILL_INTERVAL=7d, or DRILL_SCHEDULE="0 5 * * 0"'},
          ctx,
        ),
      )
      .transform(
        (data): DrillConfig => ({
          host: data.DRILL_DB_HOST,
          port: data.DRILL_DB_PORT,
          user: data.DRILL_DB_USER,
          password: data.DRILL_DB_PASSWORD,
          schedule: scheduleOf({interval: data.DRILL_INTERVAL, cron: data.DRILL_SCHEDULE, timezone: data.TZ}),
          maxAgeMs: data.DRILL_MAX_AGE,
          osUser: data.DRILL_OS_USER,
          type: data.DRILL_TYPE,
        }),
      ),
)

/** The server drills restore on: DB_* with the DRILL_DB_* that are set. */
export function drillServer(database: DatabaseConfig, drillConfig: DrillConfig | undefined): DatabaseConfig {
  if (!drillConfig) return database
  const server = {...database, host: drillConfig.host ?? database.host, port: drillConfig.port ?? database.port, user: drillConfig.user ?? database.user}
  return drillConfig.password === undefined ? server : {...server, password: drillConfig.password, passwordSource: undefined, passfile: undefined}
}

/** `dbb check`'s drill-age check reads only DRILL_MAX_AGE (not where or when drills run). */
export const drillAge = defineSection(['DRILL_MAX_AGE'], (object) => object.transform((data) => ({maxAgeMs: data.DRILL_MAX_AGE})))
