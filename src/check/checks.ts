import {Cron} from 'croner'


import {BackupMetadata, DamagedBackup, newestFirst, scanBackups} from '../backup/metadata'
import {decompressBuffer} from '../compress/codec-streams'
import {codecOfKey} from '../compress/codecs'
import type {CheckConfig, ScheduleConfig} from '../config'
import {DEFAULT_DRILL_MAX_AGE_MS} from '../config/drill'
import {drillCheck} from './drill-check'
import {errorMessage} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {TimelineSwitch, parseTimelineHistory, timelineOfName, verifyWalChain} from '../wal/chain'
import {WAL_PREFIX, walFileKind, walNameOfKey} from '../wal/segments'
import {archivedSystemIdentifier, systemIdentifierOfArchived} from '../wal/system-identifier'
import {isEncryptedKey} from '../encrypt/recipients'

export type CheckName = 'base-backup' | 'wal' | 'logical-backup' | 'drill'

export interface CheckResult {
  name: CheckName
  /** `not-configured`: nothing of this kind was ever stored and nothing asks for it (a logical-only setup); does not fail. */
  status: 'pass' | 'fail' | 'off' | 'not-configured'
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

/** Neither a base backup nor archived WAL is in storage, and no switch asks for the check. */
export function notConfigured(name: CheckName, what: string): CheckResult {
  const message = `not configured: no ${what} in storage (set CHECK_${name === 'wal' ? 'WAL' : 'BASE_BACKUP'}=true to require one)`
  return {name, status: 'not-configured', newest: null, newestAt: null, ageSeconds: null, maxAgeSeconds: null, message}
}

/**
 * Looks at storage only (no database connection): what a restore would have to work with right
 * now. Base backups and WAL (point-in-time recovery) are checked once either exists in storage, or
 * when `pitrConfigured` (dbb serve takes base backups or streams WAL), or when CHECK_BASE_BACKUP /
 * CHECK_WAL is true; false turns a check off. A logical-only setup passes with both "not configured".
 */
export async function runChecks(
  storage: StorageBackend,
  options: {prefix: string; config: CheckConfig; logicalIntervalMs: number; pitrConfigured?: boolean; now?: Date; drillMaxAgeMs?: number},
): Promise<CheckReport> {
  const now = options.now ?? new Date()
  const {config} = options
  const {backups, damaged} =
    config.baseBackup !== false || config.wal !== false || config.logicalBackup ? await scanBackups(storage, {prefix: options.prefix}) : {backups: [], damaged: []}
  const finishedAt = (backup: BackupMetadata) => new Date(Date.parse(backup.createdAt) + backup.durationMs)
  const newestBackup = (type: 'base' | 'logical') =>
    backups.filter((backup) => backup.type === type).sort((a, b) => finishedAt(b).getTime() - finishedAt(a).getTime())[0]
  const candidate = (backup: BackupMetadata | undefined): Candidate | undefined => backup && {name: backup.id, at: finishedAt(backup)}

  const newestBase = newestBackup('base')
  const walFiles: {name: string; at: Date; key: string}[] = []
  if (config.wal !== false || config.baseBackup === undefined) {
    // What the checks below read is the newest base backup's chain: its first segment and every key
    // after it (later segments of its timeline, then the later timelines with their .history files,
    // which sort after it). Listing from there keeps a check of a long archive at one or two list
    // requests (S3 StartAfter). Without such a backup the whole prefix is listed (the newest segment
    // can be anywhere).
    const first = newestBase?.firstWalSegment !== undefined && walFileKind(newestBase.firstWalSegment) === 'segment' ? newestBase.firstWalSegment : undefined
    const startAfter = first === undefined ? undefined : `${WAL_PREFIX}${first}`
    for await (const object of storage.list(WAL_PREFIX, startAfter === undefined ? {} : {startAfter})) {
      const name = walNameOfKey(object.key)
      if (name && (startAfter === undefined || object.key > startAfter)) walFiles.push({name, at: object.lastModified, key: object.key})
    }
  }

  const pitrInUse = Boolean(options.pitrConfigured) || newestBase !== undefined || damaged.some((entry) => entry.type === 'base') || walFiles.length > 0
  const walMaxAgeMs = config.checkpointTimeoutMs + WAL_MARGIN_MS
  const baseCheck =
    config.baseBackup === undefined && !pitrInUse
      ? notConfigured('base-backup', 'base backup or archived WAL')
      : evaluate('base-backup', config.baseBackup ?? true, candidate(newestBase), config.baseBackupIntervalMs + BASE_BACKUP_MARGIN_MS, now, 'base backup')
  let walCheck: CheckResult
  if (config.wal === undefined && !pitrInUse) walCheck = notConfigured('wal', 'archived WAL or base backup')
  else {
    // Only segments show that the archiver keeps up: a drill's .history, a .backup label or a .partial do not.
    const newestSegment = walFiles
      .filter((file) => walFileKind(file.name) === 'segment')
      .reduce<Candidate | undefined>((newest, file) => {
        // Same time (a copied archive): the later segment is the newer one.
        const newer = !newest || file.at > newest.at || (file.at.getTime() === newest.at.getTime() && file.name > newest.name)
        return newer ? {name: file.name, at: file.at} : newest
      }, undefined)
    walCheck = evaluate('wal', config.wal ?? true, newestSegment, walMaxAgeMs, now, 'archived WAL segment')
    if (walCheck.status !== 'off' && newestSegment) {
      const cluster = await checkSameCluster(storage, newestSegment.name, walFiles.find((file) => file.name === newestSegment.name)!.key)
      if (cluster) walCheck = {...walCheck, status: 'fail', message: `${walCheck.message}; ${cluster}`}
    }

    if (walCheck.status !== 'off' && newestBase) {
      const chain = await checkWalChain(storage, newestBase, walFiles, {recent: now.getTime() - finishedAt(newestBase).getTime() <= walMaxAgeMs})
      walCheck = {...walCheck, status: chain.ok ? walCheck.status : 'fail', message: `${walCheck.message}; ${chain.message}`}
    }
  }

  const checks = [
    failIfNewerDamaged(baseCheck, 'base', damaged),
    walCheck,
    failIfNewerDamaged(
      evaluate('logical-backup', config.logicalBackup, candidate(newestBackup('logical')), options.logicalIntervalMs + LOGICAL_BACKUP_MARGIN_MS, now, 'logical backup'),
      'logical',
      damaged,
    ),
    await drillCheck(storage, {prefix: options.prefix, maxAgeMs: options.drillMaxAgeMs ?? DEFAULT_DRILL_MAX_AGE_MS, now}),
  ]
  return {ok: checks.every((check) => check.status !== 'fail'), checkedAt: now.toISOString(), location: storage.location, checks}
}

/**
 * Whether every segment the newest base backup needs is archived, from its first segment to the
 * newest one on its timeline and the timelines that follow (read from the .history files).
 * `recent`: the backup finished within the WAL age limit, so its first segment may still be on its
 * way to the archive.
 */
async function checkWalChain(
  storage: StorageBackend,
  backup: BackupMetadata,
  walFiles: {name: string; at: Date; key: string}[],
  options: {recent: boolean},
): Promise<{ok: boolean; message: string}> {
  if (!backup.firstWalSegment || walFileKind(backup.firstWalSegment) !== 'segment') {
    return {ok: true, message: `WAL chain not checked: ${backup.id} records no first WAL segment (taken by an older dbb)`}
  }

  const historyFiles = walFiles.filter((file) => walFileKind(file.name) === 'history')
  // Encrypted (ENCRYPTION_RECIPIENTS): the check runs where backups are made, which holds no identity by design.
  const encrypted = historyFiles.find((file) => isEncryptedKey(file.key))
  if (encrypted) return {ok: true, message: `WAL chain not checked: the timeline history ${encrypted.name} is encrypted, and dbb check decrypts nothing`}
  const histories = new Map<number, TimelineSwitch[]>()
  for (const {name, key} of historyFiles) {
    try {
      histories.set(timelineOfName(name), parseTimelineHistory(await readText(storage, key)))
    } catch (error) {
      // A history file that cannot be read is not absent: recovery would fail on it, or follow the wrong timeline.
      return {ok: false, message: `timeline history ${name} cannot be read: ${errorMessage(error)}`}
    }
  }

  const chain = verifyWalChain({
    firstSegment: backup.firstWalSegment,
    segmentSize: backup.walSegmentSize ?? 16 * 1024 * 1024,
    archived: walFiles,
    histories,
  })
  const timelines = chain.timelines.join('→')
  if (chain.divergence) {
    const {timeline, branchedAt, child, newestOnParent} = chain.divergence
    return {
      ok: false,
      message:
        `timeline ${timeline} kept archiving (up to ${newestOnParent}) after timeline ${child} branched from it at ${branchedAt}: two clusters archive into this location ` +
        `(a restored copy that archives, or a split brain). A restore with the default target timeline (latest) follows timeline ${child} and loses timeline ${timeline}'s writes after the branch; ` +
        `restore with --target-timeline ${timeline}, and stop the other cluster from archiving here`,
    }
  }

  if (chain.last === undefined) {
    if (options.recent) return {ok: true, message: `waiting for ${backup.firstWalSegment}, the first WAL segment of ${backup.id}, to be archived`}
    return {ok: false, message: `WAL chain broken: ${backup.firstWalSegment}, the first WAL segment of ${backup.id}, is not archived`}
  }

  if (chain.firstMissing) {
    return {
      ok: false,
      message:
        `WAL chain broken: ${chain.firstMissing} is missing (${chain.missingCount} of ${chain.segments} segments missing from ${backup.firstWalSegment}, ` +
        `the first of ${backup.id}, to ${chain.last}, timeline ${timelines}); recovery from that backup stops before it`,
    }
  }

  return {ok: true, message: `WAL chain complete from ${backup.firstWalSegment} (${backup.id}) to ${chain.last}, ${chain.segments} segments, timeline ${timelines}`}
}

/** A problem when the newest archived segment is of another cluster than the archive records (two clusters, one location). */
async function checkSameCluster(storage: StorageBackend, newestSegment: string, key: string): Promise<string | undefined> {
  try {
    const owner = await archivedSystemIdentifier(storage)
    // An encrypted segment's header cannot be read without the identity; wal push still refuses another cluster's segments (it reads the local file).
    if (owner === undefined || isEncryptedKey(key)) return undefined
    const newest = await systemIdentifierOfArchived(storage, key, timelineOfName(newestSegment))
    if (newest === undefined || newest === owner) return undefined
    return `${newestSegment} belongs to the cluster with system identifier ${newest}, but this WAL archive holds the WAL of ${owner}: two clusters archive into this location`
  } catch (error) {
    return `the cluster of the WAL archive cannot be verified: ${errorMessage(error)}`
  }
}

/** A small archived file (a timeline history) as text. */
async function readText(storage: StorageBackend, key: string): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of await storage.get(key)) chunks.push(chunk as Buffer)
  return (await decompressBuffer(codecOfKey(key) ?? 'gzip', Buffer.concat(chunks))).toString('utf8')
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
