import {randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import {errorMessage} from '../errors'
import {formatElapsed} from '../format'
import type {Logger} from '../logger'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {MAX_HEARTBEAT_MS, claimHeartbeatMs, claimedIdOf, staleAfterMs} from './claim-id'
import {backupIdOfKey, parseBackupId, sidecarKey} from './naming'

export interface RemovedLeftover {
  key: string
  id: string
  /** How long nothing was written under the id (by the store's clock). */
  quietMs: number
  kind: 'object' | 'staged'
}

/**
 * A killed run's leftovers, removed at the next start instead of a day later (ORPHAN_GRACE): the
 * `.partial` files, the id claim, and what the backend staged (an S3 multipart upload). Used at the
 * start of every backup (`backup run`, and each backup `dbb serve` takes) and when `dbb serve` starts.
 *
 * Never a live writer's: an id is a dead run's only when none of its objects was written for
 * `staleAfterMs(heartbeat)`, the heartbeat being the interval its claim recorded (a live writer
 * rewrites its claim at that interval, however long pg_dump waits on a lock). An id without a
 * claim gets the longest interval a writer uses. Ages are measured on the store's own clock (a
 * probe object's timestamp, see storeClock), so a host whose clock is off cannot mistake a live writer for a dead one.
 *
 * A complete backup (its sidecar exists) loses only its stray `.partial` objects; an incomplete
 * id loses everything under it, as prune would after ORPHAN_GRACE.
 */
export async function removeLeftovers(storage: StorageBackend, options: {prefix: string; logger?: Logger}): Promise<RemovedLeftover[]> {
  const storeNow = await storeClock(storage, options.prefix)
  const byId = new Map<string, ObjectInfo[]>()
  for await (const object of storage.list(`${options.prefix}_`)) {
    const id = backupIdOfKey(object.key)
    if (!id || parseBackupId(id)?.prefix !== options.prefix) continue
    byId.set(id, [...(byId.get(id) ?? []), object])
  }

  const dead = new Map<string, {objects: ObjectInfo[]; quietMs: number}>()
  for (const [id, objects] of byId) {
    const complete = objects.some((object) => object.key === sidecarKey(id))
    const leftovers = complete ? objects.filter((object) => object.key.endsWith('.partial')) : objects
    if (leftovers.length === 0) continue
    const quietMs = storeNow - Math.max(...objects.map((object) => object.lastModified.getTime()))
    // Cheap first: an id written within the shortest possible bound is alive, no claim read needed.
    if (quietMs <= staleAfterMs(0)) continue
    if (quietMs <= staleAfterMs(await heartbeatOf(storage, objects))) continue
    dead.set(id, {objects: leftovers, quietMs})
  }

  const removed: RemovedLeftover[] = []
  if (dead.size === 0) return removed
  // Staged uploads first, while the dead ids' claims still stand: no new run can take those ids meanwhile.
  const staged = (await storage.sweep?.(new Date(storeNow), {only: (key) => dead.has(backupIdOfKey(key) ?? '')})) ?? []
  for (const leftover of staged) {
    const id = backupIdOfKey(leftover.key) ?? leftover.key
    removed.push({key: leftover.key, id, quietMs: dead.get(id)?.quietMs ?? 0, kind: 'staged'})
  }

  for (const [id, {objects, quietMs}] of dead) {
    // Claims last: while one stands, no other run takes this id.
    const ordered = [...objects].sort((a, b) => Number(claimedIdOf(a.key) !== undefined) - Number(claimedIdOf(b.key) !== undefined))
    for (const object of ordered) {
      await storage.delete(object.key)
      removed.push({key: object.key, id, quietMs, kind: 'object'})
    }
  }

  for (const entry of removed) {
    options.logger?.info(
      {event: 'leftovers.removed', key: entry.key, backupId: entry.id, kind: entry.kind, quietMs: entry.quietMs},
      `removed a killed run's leftover ${entry.key} (nothing written for ${formatElapsed(entry.quietMs)})`,
    )
  }

  return removed
}

/** removeLeftovers that never fails its caller: a backup or a server start goes on, with a warning. */
export async function removeLeftoversQuietly(storage: StorageBackend, options: {prefix: string; logger: Logger}): Promise<RemovedLeftover[]> {
  try {
    return await removeLeftovers(storage, options)
  } catch (error) {
    options.logger.warn({event: 'leftovers.failed', error: errorMessage(error)}, `could not clean a killed run's leftovers (prune removes them after ORPHAN_GRACE): ${errorMessage(error)}`)
    return []
  }
}

/**
 * `dbb serve`: cleans at start, and once more when a run killed just before this start is
 * certainly dead (a container restarted at once after `docker stop` killed its backup). Returns a stop.
 */
export function scheduleLeftoverCleanup(storage: StorageBackend, options: {prefix: string; logger: Logger}): () => void {
  void removeLeftoversQuietly(storage, options)
  const timer = setTimeout(() => void removeLeftoversQuietly(storage, options), staleAfterMs(MAX_HEARTBEAT_MS))
  timer.unref()
  return () => clearTimeout(timer)
}

/** The heartbeat of the id's writer: the longest any of its claims recorded; the longest in use when it has none. */
async function heartbeatOf(storage: StorageBackend, objects: ObjectInfo[]): Promise<number> {
  let heartbeat: number | undefined
  for (const object of objects) {
    if (claimedIdOf(object.key) === undefined) continue
    const recorded = await claimHeartbeatMs(storage, object.key)
    if (recorded !== undefined) heartbeat = Math.max(heartbeat ?? 0, recorded)
  }

  return heartbeat ?? MAX_HEARTBEAT_MS
}

/**
 * "Now" as the store stamps writes: the timestamp of a probe object, written and removed here. The
 * probe is shaped as the claim of a year-1 backup id that beats every millisecond, so one left by a
 * kill between its write and its delete is a dead run's leftover like any other: the next start
 * cleanup (or prune) removes it.
 */
async function storeClock(storage: StorageBackend, prefix: string): Promise<number> {
  const probe = `${prefix}_00010101T000000Z.sql.gz.${randomBytes(8).toString('hex')}.partial`
  await storage.put(probe, Readable.from([Buffer.from(JSON.stringify({heartbeatMs: 1}))]), {overwrite: true, contentType: 'application/json'})
  try {
    const written = await storage.stat(probe)
    if (!written) throw new Error(`the probe ${probe} was written but is not there`)
    return written.lastModified.getTime()
  } finally {
    await storage.delete(probe)
  }
}
