import {Readable} from 'node:stream'
import {z} from 'zod'

import {DRILL_SUFFIX} from '../backup/naming'
import {errorMessage, isNotFound} from '../errors'
import {BackupListing, ListOptions, scanBackups} from '../backup/metadata'
import type {StorageBackend} from '../storage/contract'

/**
 * The drill sidecar `<id>.drill.json`: the last drill's verdict on one backup, stored next to it
 * (overwritten by the next drill of the same backup). Written after the scratch database is
 * dropped, so a result exists only for a drill that finished. Lenient like the backup sidecar: a
 * newer dbb's fields are kept, an unreadable result reads as "never drilled" in listings.
 */
export {DRILL_SUFFIX}

export const drillDifferenceSchema = z.object({
  kind: z.string(),
  object: z.string(),
  expected: z.string(),
  actual: z.string(),
})

/** What a physical drill (a base backup restored and WAL replayed on a private server) saw. */
export const physicalDrillSchema = z.looseObject({
  pgMajor: z.number().int(),
  binDir: z.string(),
  /** Download + sha256 + extract. */
  restoreMs: z.number().nonnegative(),
  /** Server start, WAL replay, promotion. */
  replayMs: z.number().nonnegative(),
  /** The newest archived segment when the drill began: where replay had to reach (without a target). */
  archiveEnd: z.string().nullable(),
  /** Where recovery ended (the new timeline's switch point). */
  walEnd: z.string().nullable(),
  /** Each database of the restored cluster: tables and their exact total row count. */
  databases: z.array(z.object({name: z.string(), tables: z.number().int().nonnegative(), rows: z.number().int().nonnegative()})),
})
export type PhysicalDrillDetails = z.infer<typeof physicalDrillSchema>

export const drillResultSchema = z.looseObject({
  backupId: z.string(),
  status: z.enum(['passed', 'failed']),
  /**
   * What was checked: `contents` (the backup's record), `restore` only (a backup older than the
   * record), or `replay` (a base backup: restored, WAL replayed to the end of the archive, every database read).
   */
  checked: z.enum(['contents', 'restore', 'replay']).catch('restore'),
  differences: z.array(drillDifferenceSchema),
  /** Why it failed when the restore itself failed (no comparison happened). */
  error: z.string().optional(),
  /** Restore duration: the measured RTO (download + import + verification), in milliseconds. */
  restoreMs: z.number().nonnegative(),
  /** The whole drill, comparison and cleanup included. */
  durationMs: z.number().nonnegative(),
  sizeBytes: z.number().int().nonnegative(),
  restoredBytes: z.number().int().nonnegative().optional(),
  scratchDatabase: z.string(),
  server: z.string(),
  startedAt: z.iso.datetime(),
  finishedAt: z.iso.datetime(),
  dbbVersion: z.string(),
  /** Physical drills only. */
  physical: physicalDrillSchema.optional(),
})
export type DrillResult = z.infer<typeof drillResultSchema>

export function drillKey(id: string): string {
  return `${id}${DRILL_SUFFIX}`
}

export async function writeDrillResult(storage: StorageBackend, result: DrillResult): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(result, null, 2)}\n`)])
  await storage.put(drillKey(result.backupId), body, {overwrite: true, contentType: 'application/json'})
}

/** The last drill of a backup; undefined when it was never drilled. A read error is thrown, never taken for "never". */
export async function readDrillResult(storage: StorageBackend, id: string): Promise<DrillResult | undefined> {
  let stream: Readable
  try {
    stream = await storage.get(drillKey(id))
  } catch (error) {
    if (isNotFound(error)) return undefined
    throw error
  }

  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  try {
    const parsed = drillResultSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')))
    return parsed.success && parsed.data.backupId === id ? parsed.data : undefined
  } catch (error) {
    throw new Error(`${drillKey(id)} is not JSON: ${errorMessage(error)}`)
  }
}

export type DrillState = 'passed' | 'failed' | 'never' | 'unreadable'

/** What a listing shows for each backup: the last drill's status. Reads each drill sidecar that the object listing shows exists. */
export async function drillStates(storage: StorageBackend, ids: string[], existingKeys?: Set<string>): Promise<Map<string, {state: DrillState; result?: DrillResult}>> {
  const states = new Map<string, {state: DrillState; result?: DrillResult}>()
  await Promise.all(
    ids.map(async (id) => {
      if (existingKeys && !existingKeys.has(drillKey(id))) {
        states.set(id, {state: 'never'})
        return
      }

      try {
        const result = await readDrillResult(storage, id)
        states.set(id, result ? {state: result.status, result} : {state: 'never'})
      } catch {
        states.set(id, {state: 'unreadable'})
      }
    }),
  )
  return states
}

/** A backup's last drill as listings show it. */
export interface ListedDrill {
  status: DrillState
  finishedAt?: string
  restoreMs?: number
}

export type BackupDrills = ReadonlyMap<string, ListedDrill>

/**
 * The drill column of a listing: a drill result is read only for backups whose listing shows one
 * (on S3 each read is a request: 1,000 backups were 1,000 GETs of results that mostly do not
 * exist); a listing without its keys costs a read per backup.
 */
export async function drillsOf(storage: StorageBackend, listing: BackupListing): Promise<BackupDrills> {
  const states = await drillStates(storage, listing.backups.map(({id}) => id), listing.listedKeys ? new Set(listing.listedKeys) : undefined)
  const drills = new Map<string, ListedDrill>()
  for (const [id, {state, result}] of states) drills.set(id, result ? {status: state, finishedAt: result.finishedAt, restoreMs: result.restoreMs} : {status: state})
  return drills
}

/** scanBackups with each backup's last drill: one listing of the objects serves both. */
export async function scanWithDrills(storage: StorageBackend, options: ListOptions = {}): Promise<{listing: BackupListing; drills: BackupDrills}> {
  const listing = await scanBackups(storage, options)
  return {listing, drills: await drillsOf(storage, listing)}
}
