import type {ObjectInfo} from '../storage/contract'
import type {BackupMetadata} from './metadata'
import {backupIdOfKey, parseBackupId} from './naming'
import {RetentionTiers, tierKeepReasons} from './retention-tiers'

export interface RetentionRules extends RetentionTiers {
  /** Older than this many days expires; 0 turns the age rule off. */
  retentionDays: number
  /** Keep at most this many newest backups. */
  backupsToRetain?: number
  /**
   * Objects that belong to no backup (crashed writes) are deleted once their id has seen no write
   * for this long. A running backup refreshes its id claim well within it (src/backup/claim-id.ts).
   */
  orphanGraceMs: number
}

export interface RetentionPlan {
  keep: BackupMetadata[]
  /** Backups that are damaged or unreadable: never deleted, whatever their age (their objects are not orphans either). */
  damaged: string[]
  expire: {backup: BackupMetadata; reason: string}[]
  /** Why each kept backup is kept (the floor, a tier, today's rules), by id: what `prune --dry-run` explains. */
  keptBecause: Record<string, string[]>
  orphans: {key: string; sizeBytes: number; ageMs: number}[]
}

const DAY_MS = 24 * 3600 * 1000

/**
 * Decides what prune deletes; pure, so every rule is unit-tested without storage. The newest
 * complete backup is always kept, whatever the rules say: retention must never leave a database
 * with no backup at all. Rules apply per type: logical dumps and base backups are counted and
 * floored separately, so frequent dumps never push out the only base backup (or the reverse).
 *
 * Damaged or unreadable backups (`damaged`, ids) are never deleted and count for nothing: the
 * floor and BACKUPS_TO_RETAIN apply to complete backups only, so a damaged backup, however new,
 * never pushes a good one out. No decision here reads anything from a damaged backup's sidecar.
 */
export function planRetention(
  backups: BackupMetadata[],
  objects: ObjectInfo[],
  rules: RetentionRules,
  now: Date,
  prefix: string,
  damaged: string[] = [],
): RetentionPlan {
  const mine = backups.filter((backup) => parseBackupId(backup.id)?.prefix === prefix)
  const ordered = [...mine].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
  const plan: RetentionPlan = {keep: [], damaged: damaged.filter((id) => parseBackupId(id)?.prefix === prefix), expire: [], keptBecause: {}, orphans: []}
  const seenOfType = new Map<string, number>()
  const tierReasons = new Map<string, string[]>()
  for (const type of new Set(ordered.map((backup) => backup.type))) {
    for (const [id, reasons] of tierKeepReasons(ordered.filter((backup) => backup.type === type), rules, now)) tierReasons.set(id, reasons)
  }

  for (const backup of ordered) {
    const index = seenOfType.get(backup.type) ?? 0
    seenOfType.set(backup.type, index + 1)
    const ageMs = now.getTime() - Date.parse(backup.createdAt)
    let reason: string | undefined
    if (index === 0) reason = undefined
    else if (rules.backupsToRetain !== undefined && index >= rules.backupsToRetain) {
      reason = `beyond the ${rules.backupsToRetain} newest (BACKUPS_TO_RETAIN)`
    } else if (rules.retentionDays > 0 && ageMs > rules.retentionDays * DAY_MS) {
      reason = `older than ${rules.retentionDays} days (RETENTION_DAYS)`
    }

    const tiers = tierReasons.get(backup.id) ?? []
    if (reason && tiers.length === 0) {
      plan.expire.push({backup, reason})
      continue
    }

    plan.keep.push(backup)
    const floor = index === 0 ? [`newest complete ${backup.type} backup (never deleted)`] : []
    const current = index > 0 && !reason ? [currentRulesReason(rules)] : []
    plan.keptBecause[backup.id] = [...floor, ...tiers, ...current]
  }

  // An object is an orphan only when nothing under its id was written within the grace: a backup
  // still running keeps its claim fresh, so its .partial files are never swept (however long pg_dump stalls).
  const complete = new Set(backups.map((backup) => backup.id))
  const unusable = new Set(damaged)
  const lastWrite = new Map<string, number>()
  for (const object of objects) {
    const id = backupIdOfKey(object.key)
    if (id) lastWrite.set(id, Math.max(lastWrite.get(id) ?? 0, object.lastModified.getTime()))
  }

  for (const object of objects) {
    const id = backupIdOfKey(object.key)
    if (!id || parseBackupId(id)?.prefix !== prefix) continue
    if (unusable.has(id)) continue
    if (complete.has(id) && !object.key.endsWith('.partial')) continue
    const ageMs = now.getTime() - object.lastModified.getTime()
    // A complete backup's leftover .partial (an unreleased claim) is no running backup's: its own age counts.
    const quietMs = complete.has(id) ? ageMs : now.getTime() - (lastWrite.get(id) ?? object.lastModified.getTime())
    if (quietMs > rules.orphanGraceMs) plan.orphans.push({key: object.key, sizeBytes: object.sizeBytes, ageMs})
  }

  return plan
}

/** What keeps a backup that today's rules (RETENTION_DAYS, BACKUPS_TO_RETAIN) do not expire. */
function currentRulesReason(rules: RetentionRules): string {
  const parts = [
    rules.retentionDays > 0 ? `within ${rules.retentionDays} days (RETENTION_DAYS)` : 'RETENTION_DAYS=0 keeps every age',
    ...(rules.backupsToRetain === undefined ? [] : [`among the ${rules.backupsToRetain} newest (BACKUPS_TO_RETAIN)`]),
  ]
  return parts.join(', ')
}
