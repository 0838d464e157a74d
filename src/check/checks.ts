import {Cron} from 'croner'

import {DamagedBackup, newestFirst, scanBackups} from '../backup/metadata'
import type {CheckConfig, ScheduleConfig} from '../config'
import type {StorageBackend} from '../storage/contract'
import {WAL_PREFIX, walNameOfKey} from '../wal/segments'

export type CheckName = 'base-backup' | 'wal' | 'logical-backup'

export interface CheckResult {
  name: CheckName
  status: 'pass' | 'fail' | 'off'
  /** The newest base backup id, WAL file name or logical backup id. */
  newest: string | null
  /** When it was completed (a backup) or stored (WAL). */
  newestAt: string | null
  ageSeconds: number | null
  maxAgeSeconds: number | null
  message: string
}

export interface CheckReport {
  ok: boolean
  checkedAt: string
  location: string
  checks: CheckResult[]
}

/** Slack added on top of each configured interval: a backup that takes a few minutes is not late. */
export const BASE_BACKUP_MARGIN_MS = 5 * 60_000
export const WAL_MARGIN_MS = 2 * 60_000
export const LOGICAL_BACKUP_MARGIN_MS = 5 * 60_000

/** How often logical backups are due under the dbb serve schedule: the interval, or the gap between the next two cron runs. */
export function logicalBackupIntervalMs(schedule: ScheduleConfig, now = new Date()): number {
  if (schedule.kind === 'interval') return schedule.intervalMs
  const job = new Cron(schedule.expression, {paused: true, timezone: schedule.timezone})
  const [next, after] = job.nextRuns(2, now)
  job.stop()
  return next && after ? after.getTime() - next.getTime() : 24 * 3600 * 1000
}

interface Candidate {
  name: string
  at: Date
}

/**
 * Pure: one check from the newest item found and its limit. Ages count from when a backup
 * finished (start + duration), so a long backup does not look late while the next one runs.
 */
export function evaluate(name: CheckName, enabled: boolean, newest: Candidate | undefined, maxAgeMs: number, now: Date, what: string): CheckResult {
  const maxAgeSeconds = Math.round(maxAgeMs / 1000)
  if (!enabled) return {name, status: 'off', newest: null, newestAt: null, ageSeconds: null, maxAgeSeconds: null, message: 'turned off'}
  if (!newest) return {name, status: 'fail', newest: null, newestAt: null, ageSeconds: null, maxAgeSeconds, message: `no ${what} found`}
  const ageSeconds = Math.max(0, Math.round((now.getTime() - newest.at.getTime()) / 1000))
  const late = ageSeconds > maxAgeSeconds
  return {
    name,
    status: late ? 'fail' : 'pass',
    newest: newest.name,
    newestAt: newest.at.toISOString(),
    ageSeconds,
    maxAgeSeconds,
    message: `newest ${what} is ${formatSeconds(ageSeconds)} old (limit ${formatSeconds(maxAgeSeconds)})`,
  }
}

/** Looks at storage only (no database connection): what a restore would have to work with right now. */
export async function runChecks(
  storage: StorageBackend,
  options: {prefix: string; config: CheckConfig; logicalIntervalMs: number; now?: Date},
): Promise<CheckReport> {
  const now = options.now ?? new Date()
  const {config} = options
  const {backups, damaged} = config.baseBackup || config.logicalBackup ? await scanBackups(storage, {prefix: options.prefix}) : {backups: [], damaged: []}
  const newestOf = (type: 'base' | 'logical'): Candidate | undefined => {
    const finished = backups
      .filter((backup) => backup.type === type)
      .map((backup) => ({name: backup.id, at: new Date(Date.parse(backup.createdAt) + backup.durationMs)}))
    return finished.sort((a, b) => b.at.getTime() - a.at.getTime())[0]
  }

  let newestWal: Candidate | undefined
  if (config.wal) {
    for await (const object of storage.list(WAL_PREFIX)) {
      const name = walNameOfKey(object.key)
      if (name && (!newestWal || object.lastModified > newestWal.at)) newestWal = {name, at: object.lastModified}
    }
  }

  const checks = [
    failIfNewerDamaged(evaluate('base-backup', config.baseBackup, newestOf('base'), config.baseBackupIntervalMs + BASE_BACKUP_MARGIN_MS, now, 'base backup'), 'base', damaged),
    evaluate('wal', config.wal, newestWal, config.checkpointTimeoutMs + WAL_MARGIN_MS, now, 'archived WAL file'),
    failIfNewerDamaged(
      evaluate('logical-backup', config.logicalBackup, newestOf('logical'), options.logicalIntervalMs + LOGICAL_BACKUP_MARGIN_MS, now, 'logical backup'),
      'logical',
      damaged,
    ),
  ]
  return {ok: checks.every((check) => check.status !== 'fail'), checkedAt: now.toISOString(), location: storage.location, checks}
}

/** A damaged or unreadable backup newer than the newest complete one is what a restore of `latest` would meet: the check fails naming it. */
function failIfNewerDamaged(result: CheckResult, type: string, damaged: DamagedBackup[]): CheckResult {
  if (result.status === 'off') return result
  const newer = damaged.find((entry) => entry.type === type && (!result.newest || newestFirst(entry, {id: result.newest}) < 0))
  return newer ? {...result, status: 'fail', message: `newest ${type} backup ${newer.id} is ${newer.status}: ${newer.cause}`} : result
}

export function formatSeconds(total: number): string {
  const days = Math.floor(total / 86_400)
  const hours = Math.floor((total % 86_400) / 3600)
  const minutes = Math.floor((total % 3600) / 60)
  const seconds = total % 60
  if (days > 0) return `${days}d${hours}h${minutes}m`
  if (hours > 0) return `${hours}h${minutes}m`
  if (minutes > 0) return `${minutes}m${seconds}s`
  return `${seconds}s`
}

/** One line per failing check, for alerts. */
export function describeFailures(report: CheckReport): string[] {
  return report.checks.filter((check) => check.status === 'fail').map((check) => `${check.name}: ${check.message}`)
}
