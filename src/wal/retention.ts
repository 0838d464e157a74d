import type {BackupMetadata} from '../backup/metadata'
import {formatElapsed} from '../format'
import type {Logger} from '../logger'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {historyFileName} from './chain'
import {WAL_PREFIX, segmentPosition, walFileKind, walKeys, walNameOfKey} from './segments'

export interface WalPrunePlan {
  /** The first segment the oldest retained base backup needs; undefined when no base backup is retained. */
  floor?: string
  delete: {key: string; sizeBytes: number; reason: string}[]
}

/**
 * A local-backend write in progress or abandoned by a crash: `<the key of an archived WAL file>.<random>.partial`,
 * whatever its codec and whether encrypted (`wal/<name>.gz.age.<random>.partial`), which walNameOfKey knows.
 */
function isPartialWalWrite(key: string): boolean {
  const suffix = /\.[0-9a-f]+\.partial$/.exec(key)
  return suffix !== null && walNameOfKey(key.slice(0, suffix.index)) !== undefined
}

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
      if (isPartialWalWrite(object.key) && ageMs > orphanGraceMs) {
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
  const {floor} = planWalPruning([], retainedBaseBackups, options.now ?? new Date(), options.orphanGraceMs)
  for await (const object of walBeforeFloor(storage, floor)) objects.push(object)
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

/**
 * The archived WAL keys prune has to look at: on each timeline, those before `floor`. Keys sort by
 * timeline, then position, so that is one key range per timeline (startAfter/endBefore: on S3 one
 * list request per timeline plus one per 1,000 keys in the range, however long the retained rest of
 * the archive is). The timelines are found as PostgreSQL finds them: timeline 1, then each timeline
 * whose `.history` file is archived, probing upward until one is missing. Without a floor nothing
 * but abandoned uploads can be deleted, and those are looked for everywhere. Not looked at: an
 * abandoned upload (`<name>.gz.<random>.partial`, local backend) at or after the floor, left until
 * the floor passes it, and segments of a timeline whose history file is gone (kept).
 */
export async function* walBeforeFloor(storage: StorageBackend, floor: string | undefined): AsyncGenerator<ObjectInfo> {
  const floorPosition = floor === undefined ? undefined : segmentPosition(floor)
  if (floorPosition === undefined) {
    yield* storage.list(WAL_PREFIX)
    return
  }

  // A timeline exists when its history file is archived under any codec, encrypted or not.
  const historyArchived = async (timeline: number) => (await Promise.all(walKeys(historyFileName(timeline)).map((key) => storage.stat(key)))).some(Boolean)
  for (let timeline = 1; timeline === 1 || (await historyArchived(timeline)); timeline++) {
    const timelinePrefix = `${WAL_PREFIX}${historyFileName(timeline).slice(0, 8)}`
    const range = {startAfter: timelinePrefix, endBefore: `${timelinePrefix}${floorPosition}`}
    for await (const object of storage.list(timelinePrefix, range)) {
      // Backends may ignore the range (it is optional in the contract): filter here too.
      if (object.key > range.startAfter && object.key < range.endBefore) yield object
    }
  }
}
