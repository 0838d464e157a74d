import type {BackupMetadata} from '../backup/metadata'
import {formatElapsed} from '../format'
import type {Logger} from '../logger'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {WAL_PREFIX, segmentPosition, walFileKind, walNameOfKey} from './segments'

export interface WalPrunePlan {
  /** The first segment the oldest retained base backup needs; undefined when no base backup is retained. */
  floor?: string
  delete: {key: string; sizeBytes: number; reason: string}[]
}

/** A local-backend write in progress or abandoned by a crash: `wal/<name>.gz.<random>.partial` (or `.zst.…`). */
const PARTIAL_WRITE = /\.(gz|zst)\.[0-9a-f]+\.partial$/

/**
 * Which archived WAL prune deletes; pure. WAL is only useful on top of a base backup, so
 * everything before the first segment of the oldest retained base backup goes (compared by
 * position, ignoring the timeline, as pg_archivecleanup does), and nothing a retained base backup
 * needs. Timeline history files are tiny and needed to follow timelines: always kept. Without
 * any retained base backup nothing is deleted: the first one may be in progress right now.
 */
export function planWalPruning(objects: ObjectInfo[], retainedBaseBackups: BackupMetadata[], now: Date, orphanGraceMs: number): WalPrunePlan {
  const floors = retainedBaseBackups
    .map((backup) => backup.firstWalSegment)
    .filter((segment): segment is string => segment !== undefined && segmentPosition(segment) !== undefined)
    .sort((a, b) => segmentPosition(a)!.localeCompare(segmentPosition(b)!))
  const floor = floors[0]
  const plan: WalPrunePlan = {floor, delete: []}
  for (const object of objects) {
    const name = walNameOfKey(object.key)
    if (name === undefined) {
      const ageMs = now.getTime() - object.lastModified.getTime()
      if (PARTIAL_WRITE.test(object.key) && ageMs > orphanGraceMs) {
        plan.delete.push({key: object.key, sizeBytes: object.sizeBytes, reason: `unfinished WAL upload (age ${formatElapsed(ageMs)})`})
      }

      continue
    }

    const position = segmentPosition(name)
    if (floor === undefined || walFileKind(name) === 'history' || position === undefined) continue
    if (position < segmentPosition(floor)!) {
      plan.delete.push({key: object.key, sizeBytes: object.sizeBytes, reason: `before ${floor}, the first WAL segment the oldest retained base backup needs`})
    }
  }

  return plan
}

/**
 * Deletes archived WAL no retained base backup needs. "Retained" spans every name prefix in this
 * storage location (WAL belongs to the cluster, not to a prefix), minus the base backups this
 * prune run is expiring.
 */
export async function pruneWal(
  storage: StorageBackend,
  retainedBaseBackups: BackupMetadata[],
  options: {dryRun?: boolean; now?: Date; orphanGraceMs: number; logger?: Logger},
): Promise<WalPrunePlan> {
  const objects: ObjectInfo[] = []
  for await (const object of storage.list(WAL_PREFIX)) objects.push(object)
  const plan = planWalPruning(objects, retainedBaseBackups, options.now ?? new Date(), options.orphanGraceMs)
  for (const entry of plan.delete) {
    if (!options.dryRun) await storage.delete(entry.key)
    options.logger?.debug({event: 'prune.wal', key: entry.key, dryRun: Boolean(options.dryRun)}, options.dryRun ? 'would delete WAL' : 'deleted WAL')
  }

  if (plan.delete.length > 0) {
    const summary = {event: 'prune.wal_summary', deleted: plan.delete.length, floor: plan.floor, dryRun: Boolean(options.dryRun)}
    options.logger?.info(summary, `${options.dryRun ? 'would delete' : 'deleted'} ${plan.delete.length} WAL file(s)`)
  }

  return plan
}
