import {formatElapsed} from '../format'
import type {Logger} from '../logger'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {pruneWal} from '../wal/retention'
import {BackupMetadata, DamagedBackup, scanBackups} from './metadata'
import {sidecarKey} from './naming'
import {RetentionRules, planRetention} from './retention'
import {DrillState, drillStates} from '../drill/result'
import {keepNewestPassedDrill} from './drill-floor'

export interface PruneEntry {
  id: string
  /** `staged`: a backend's leftover of an unfinished write (an incomplete multipart upload), see StorageBackend.sweep. */
  kind: 'backup' | 'orphan' | 'wal' | 'staged'
  reason: string
  sizeBytes: number
}

export interface PruneResult {
  dryRun: boolean
  /** Deleted, or with --dry-run, what would be. */
  deleted: PruneEntry[]
  kept: number
  /** Each kept backup and the rules that keep it (the newest-complete floor, BACKUP_KEEP_*, RETENTION_DAYS/BACKUPS_TO_RETAIN). */
  keptBackups: {id: string; reasons: string[]}[]
  /** Backups kept because they are damaged or unreadable; any makes the prune command fail. */
  damaged: DamagedBackup[]
  /** Why archived WAL was left alone this time, when it was. */
  walSkipped?: string
}

/**
 * Applies retention to the backups with this name prefix. A backup's sidecar goes first, so a
 * crash half-way leaves an unlisted orphan (cleaned up on a later run), never a listed backup
 * whose dump is gone.
 *
 * A backup whose sidecar exists but cannot be read, or whose objects are damaged, is never
 * deleted, nor is anything whose fate depends on it: its objects are not orphans, and WAL pruning
 * (which needs every base backup's first segment) is skipped while a possibly-base backup is
 * unreadable. The rest is pruned as usual; the damaged ones are returned for the caller to report.
 */
export async function prune(
  storage: StorageBackend,
  options: {prefix: string; rules: RetentionRules; dryRun?: boolean; now?: Date; logger?: Logger},
): Promise<PruneResult> {
  const objects: ObjectInfo[] = []
  for await (const object of storage.list(`${options.prefix}_`)) objects.push(object)
  // One listing and one read per sidecar, shared by both passes below (on S3 each is a request).
  const sidecars = new Map<string, BackupMetadata>()
  const listing = await scanBackups(storage, {prefix: options.prefix, objects, cache: sidecars})
  const planned = planRetention(listing.backups, objects, options.rules, options.now ?? new Date(), options.prefix, listing.damaged.map(({id}) => id))
  const plan = keepNewestPassedDrill(planned, await drillStatesOf(storage, listing.backups, objects))
  const dryRun = Boolean(options.dryRun)
  for (const entry of listing.damaged) {
    options.logger?.error({event: 'prune.damaged', backupId: entry.id, status: entry.status, cause: entry.cause}, `kept ${entry.status} backup ${entry.id}: ${entry.cause}`)
  }

  const deleted: PruneEntry[] = []
  for (const {backup, reason} of plan.expire) {
    if (!dryRun) {
      await storage.delete(sidecarKey(backup.id))
      // The window this order exists for: the backup is no longer listed, its dump not yet deleted.
      options.logger?.debug({event: 'prune.sidecar_deleted', backupId: backup.id}, 'sidecar deleted, deleting the dump')
      await storage.delete(backup.id)
    }

    options.logger?.info({event: 'prune.deleted', backupId: backup.id, reason, dryRun}, dryRun ? 'would delete backup' : 'deleted backup')
    deleted.push({id: backup.id, kind: 'backup', reason, sizeBytes: backup.sizeBytes})
  }

  for (const orphan of plan.orphans) {
    if (!dryRun) await storage.delete(orphan.key)
    const reason = `no backup owns it (age ${formatElapsed(orphan.ageMs)})`
    options.logger?.info({event: 'prune.orphan', key: orphan.key, dryRun}, dryRun ? 'would delete orphan object' : 'deleted orphan object')
    deleted.push({id: orphan.key, kind: 'orphan', reason, sizeBytes: orphan.sizeBytes})
  }

  // Unfinished writes the backend staged (e.g. multipart uploads of a killed run), past the same grace.
  const now = options.now ?? new Date()
  for (const leftover of (await storage.sweep?.(new Date(now.getTime() - options.rules.orphanGraceMs), {dryRun: options.dryRun})) ?? []) {
    const reason = `${leftover.kind} started ${leftover.startedAt.toISOString()}, never finished`
    options.logger?.info({event: 'prune.staged', key: leftover.key, dryRun: Boolean(options.dryRun)}, 'removed staged leftover')
    deleted.push({id: leftover.key, kind: 'staged', reason, sizeBytes: leftover.sizeBytes})
  }

  // Archived WAL older than every retained base backup (of any prefix: WAL belongs to the cluster).
  const expired = new Set(plan.expire.map(({backup}) => backup.id))
  const base = await scanBackups(storage, {type: 'base', cache: sidecars})
  let walSkipped: string | undefined
  if (base.damaged.length > 0) {
    // An unreadable base backup's first WAL segment is unknown: deleting any WAL could break it.
    walSkipped = `archived WAL kept: base backup ${base.damaged.map(({id}) => id).join(', ')} cannot be read`
    options.logger?.warn({event: 'prune.wal_skipped', backupIds: base.damaged.map(({id}) => id)}, walSkipped)
  } else {
    const retainedBase = base.backups.filter((backup) => !expired.has(backup.id))
    const wal = await pruneWal(storage, retainedBase, {...options, orphanGraceMs: options.rules.orphanGraceMs})
    for (const entry of wal.delete) deleted.push({id: entry.key, kind: 'wal', reason: entry.reason, sizeBytes: entry.sizeBytes})
  }

  const keptBackups = plan.keep.map((backup) => ({id: backup.id, reasons: plan.keptBecause[backup.id] ?? []}))
  return {dryRun, deleted, kept: plan.keep.length, keptBackups, damaged: listing.damaged, walSkipped}
}

/** The last drill's verdict per backup; only drill results the listing shows are read. */
async function drillStatesOf(storage: StorageBackend, backups: BackupMetadata[], objects: ObjectInfo[]): Promise<Map<string, DrillState>> {
  const states = await drillStates(storage, backups.map(({id}) => id), new Set(objects.map(({key}) => key)))
  return new Map([...states].map(([id, {state}]) => [id, state]))
}

/** One line naming every damaged or unreadable backup and why, for errors and warnings. */
export function describeDamaged(damaged: DamagedBackup[]): string {
  return `${damaged.length} backup(s) damaged or unreadable, kept until you look at them: ${damaged.map((entry) => `${entry.id} (${entry.status}: ${entry.cause})`).join('; ')}`
}
