import type {ObjectInfo} from '../storage/contract'
import type {BackupMetadata} from './metadata'
import {backupIdOfKey, parseBackupId} from './naming'

export interface RetentionRules {
  /** Older than this many days expires; 0 turns the age rule off. */
  retentionDays: number
  /** Keep at most this many newest backups. */
  backupsToRetain?: number
  /** Objects that belong to no complete backup (crashed or in-progress writes) are deleted once older than this. */
  orphanGraceMs: number
}

export interface RetentionPlan {
  keep: BackupMetadata[]
  expire: {backup: BackupMetadata; reason: string}[]
  orphans: {key: string; sizeBytes: number; ageMs: number}[]
}

const DAY_MS = 24 * 3600 * 1000

/**
 * Decides what prune deletes; pure, so every rule is unit-tested without storage. The newest
 * complete backup is always kept, whatever the rules say: retention must never leave a database
 * with no backup at all. Rules apply per type: logical dumps and base backups are counted and
 * floored separately, so frequent dumps never push out the only base backup (or the reverse).
 */
export function planRetention(
  backups: BackupMetadata[],
  objects: ObjectInfo[],
  rules: RetentionRules,
  now: Date,
  prefix: string,
): RetentionPlan {
  const mine = backups.filter((backup) => parseBackupId(backup.id)?.prefix === prefix)
  const ordered = [...mine].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
  const plan: RetentionPlan = {keep: [], expire: [], orphans: []}
  const seenOfType = new Map<string, number>()
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

    if (reason) plan.expire.push({backup, reason})
    else plan.keep.push(backup)
  }

  const complete = new Set(backups.map((backup) => backup.id))
  for (const object of objects) {
    const id = backupIdOfKey(object.key)
    if (!id || parseBackupId(id)?.prefix !== prefix) continue
    if (complete.has(id) && !object.key.endsWith('.partial')) continue
    const ageMs = now.getTime() - object.lastModified.getTime()
    if (ageMs > rules.orphanGraceMs) plan.orphans.push({key: object.key, sizeBytes: object.sizeBytes, ageMs})
  }

  return plan
}
