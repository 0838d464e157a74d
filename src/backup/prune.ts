import {formatElapsed} from '../format'
import type {Logger} from '../logger'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {pruneWal} from '../wal/retention'
import {BackupMetadata, listBackups} from './metadata'
import {sidecarKey} from './naming'
import {RetentionRules, planRetention} from './retention'

export interface PruneEntry {
  id: string
  kind: 'backup' | 'orphan' | 'wal'
  reason: string
  sizeBytes: number
}

export interface PruneResult {
  dryRun: boolean
  deleted: PruneEntry[]
  kept: number
}

/**
 * Applies retention to the backups with this name prefix. A backup's sidecar goes first, so a
 * crash half-way leaves an unlisted orphan (cleaned up on a later run), never a listed backup
 * whose dump is gone.
 */
export async function prune(
  storage: StorageBackend,
  options: {prefix: string; rules: RetentionRules; dryRun?: boolean; now?: Date; logger?: Logger},
): Promise<PruneResult> {
  const objects: ObjectInfo[] = []
  for await (const object of storage.list(`${options.prefix}_`)) objects.push(object)
  // One listing and one read per sidecar, shared by both passes below (on S3 each is a request).
  const sidecars = new Map<string, BackupMetadata>()
  const backups = await listBackups(storage, {prefix: options.prefix, objects, cache: sidecars})
  const plan = planRetention(backups, objects, options.rules, options.now ?? new Date(), options.prefix)
  const deleted: PruneEntry[] = []
  for (const {backup, reason} of plan.expire) {
    if (!options.dryRun) {
      await storage.delete(sidecarKey(backup.id))
      await storage.delete(backup.id)
    }

    options.logger?.info({event: 'prune.deleted', backupId: backup.id, reason, dryRun: Boolean(options.dryRun)}, 'pruned backup')
    deleted.push({id: backup.id, kind: 'backup', reason, sizeBytes: backup.sizeBytes})
  }

  for (const orphan of plan.orphans) {
    if (!options.dryRun) await storage.delete(orphan.key)
    const reason = `no complete backup owns it (age ${formatElapsed(orphan.ageMs)})`
    options.logger?.info({event: 'prune.orphan', key: orphan.key, dryRun: Boolean(options.dryRun)}, 'removed orphan object')
    deleted.push({id: orphan.key, kind: 'orphan', reason, sizeBytes: orphan.sizeBytes})
  }

  // Archived WAL older than every retained base backup (of any prefix: WAL belongs to the cluster).
  const expired = new Set(plan.expire.map(({backup}) => backup.id))
  const retainedBase = (await listBackups(storage, {type: 'base', cache: sidecars})).filter((backup) => !expired.has(backup.id))
  const wal = await pruneWal(storage, retainedBase, {...options, orphanGraceMs: options.rules.orphanGraceMs})
  for (const entry of wal.delete) deleted.push({id: entry.key, kind: 'wal', reason: entry.reason, sizeBytes: entry.sizeBytes})

  return {dryRun: Boolean(options.dryRun), deleted, kept: plan.keep.length}
}
