import {randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import type {CodecName} from '../compress/codecs'
import type {StorageBackend} from '../storage/contract'
import {BackupKind, newBackupId} from './naming'

/**
 * Claims a fresh backup id, so two runs that start in the same second (two `backup run`s, a CLI
 * run beside `dbb serve`, two hosts sharing a bucket) never write the same key. Without it, on a
 * store without atomic no-overwrite writes (S3-compatible stores without If-None-Match, or
 * S3_CONDITIONAL_WRITES=false) one run's dump replaced the other's, the loser's verification
 * failed, and its cleanup deleted the dump the winner had just reported as a successful backup.
 *
 * The protocol needs only read-after-write consistent listing (S3 has it; so does a directory):
 *  1. take the first id under which no object exists (no dump, sidecar, claim or partial write);
 *  2. write the claim `<id>.<token>.partial`;
 *  3. list `<id>`: any key besides our claim means another run is there too — withdraw, take the
 *     next id.
 * Of two runs, the one that lists last sees the other's claim (written before its own listing),
 * so at most one proceeds; both may withdraw, then both retry after a random pause. A claim is a
 * `.partial` object, so a crashed run's claim is an orphan that prune removes after ORPHAN_GRACE.
 *
 * While the backup runs, the claim is rewritten every `heartbeatMs` (a quarter of ORPHAN_GRACE, at
 * most MAX_HEARTBEAT_MS). Prune measures an id's age from the newest write of any of its objects, so a
 * backup whose pg_dump waits on a lock for hours keeps its `.partial` files and its claim; on S3,
 * where a multipart upload in progress has no object yet, the claim is all there is to see.
 *
 * The claim's body records its heartbeat interval, so a later run can tell a dead writer from a
 * live one long before ORPHAN_GRACE: an id none of whose objects was written for
 * `staleAfterMs(heartbeat)` has no live writer (src/backup/leftovers.ts cleans it at the next start).
 */
export interface IdClaim {
  id: string
  /** Stops the heartbeat and removes the claim; call once the backup is complete or cleaned up. */
  release(): Promise<void>
}

export interface ClaimOptions {
  /** How often the claim is rewritten while held; no heartbeat when absent. */
  heartbeatMs?: number
  /** A failed refresh is retried at the next beat; the caller logs it. */
  onHeartbeatError?: (error: unknown) => void
}

/**
 * The longest interval a claim is refreshed at. Short, so that a killed run's leftovers are known
 * dead within half a minute (staleAfterMs) and cleaned at the next start; one empty PUT per beat.
 */
export const MAX_HEARTBEAT_MS = 10_000

/** A quarter of the grace, so three beats can fail before prune would see the id as quiet; at most MAX_HEARTBEAT_MS, at least 100 ms. */
export function heartbeatInterval(orphanGraceMs: number): number {
  return Math.max(100, Math.min(MAX_HEARTBEAT_MS, Math.floor(orphanGraceMs / 4)))
}

/** Beats a writer may miss (a slow or failing store) and still count as alive. */
export const STALE_AFTER_BEATS = 3
/** Storage timestamps: S3 reports whole seconds, so a write can look up to a second older than it is. */
const TIMESTAMP_SLACK_MS = 2_000

/**
 * THE bound for "the writer of this id is gone": nothing under the id was written for this long,
 * although a live writer refreshes its claim every `heartbeatMs`. The next run's start cleanup
 * (src/backup/leftovers.ts) removes such leftovers; anything written more recently is left alone.
 */
export function staleAfterMs(heartbeatMs: number): number {
  return STALE_AFTER_BEATS * heartbeatMs + TIMESTAMP_SLACK_MS
}

/** Claims written before claims recorded their interval (empty body) were refreshed at most every minute. */
export const LEGACY_HEARTBEAT_MS = 60_000

/** `<id>.<16 hex>.partial`: a claim (a local store's temp write of one ends in a further `.<hex>.partial`). */
const CLAIM_KEY = /^(.+)\.[0-9a-f]{16}\.partial$/

/** The backup id whose claim `key` is, or undefined when `key` is no claim. */
export function claimedIdOf(key: string): string | undefined {
  return CLAIM_KEY.exec(key)?.[1]
}

/**
 * The heartbeat interval a claim recorded; LEGACY_HEARTBEAT_MS for a claim without one (older dbb,
 * or a body that does not parse). A claim that is gone resolves undefined.
 */
export async function claimHeartbeatMs(storage: StorageBackend, key: string): Promise<number | undefined> {
  let body = ''
  try {
    for await (const chunk of await storage.get(key)) body += chunk.toString()
  } catch (error) {
    if ((error as {code?: string}).code === 'NOT_FOUND') return undefined
    throw error
  }

  try {
    const recorded = (JSON.parse(body) as {heartbeatMs?: unknown}).heartbeatMs
    return typeof recorded === 'number' && recorded > 0 ? recorded : LEGACY_HEARTBEAT_MS
  } catch {
    return LEGACY_HEARTBEAT_MS
  }
}

const ATTEMPTS = 8

export async function claimBackupId(
  storage: StorageBackend,
  prefix: string,
  startedAt: Date,
  kind: BackupKind,
  options: ClaimOptions & {codec?: CodecName; encrypted?: boolean} = {},
): Promise<IdClaim> {
  const withdrawn = new Set<string>()
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const id = await newBackupId(prefix, startedAt, async (candidate) => withdrawn.has(candidate) || (await keysUnder(storage, candidate)).length > 0, kind, options.codec, options.encrypted)
    const claim = `${id}.${randomBytes(8).toString('hex')}.partial`
    await writeClaim(storage, claim, options.heartbeatMs)
    const others = (await keysUnder(storage, id)).filter((key) => key !== claim)
    if (others.length === 0) return {id, release: holdClaim(storage, claim, options)}
    await storage.delete(claim)
    withdrawn.add(id)
    await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 100 * attempt))
  }

  throw new Error(`could not claim a backup id for ${prefix}: concurrent backups kept taking them (${ATTEMPTS} attempts)`)
}

/** The body says how often this claim is refreshed (see claimHeartbeatMs); `{}` when never. */
function writeClaim(storage: StorageBackend, claim: string, heartbeatMs: number | undefined): Promise<unknown> {
  const body = Buffer.from(JSON.stringify(heartbeatMs ? {heartbeatMs} : {}))
  return storage.put(claim, Readable.from([body]), {overwrite: true, contentType: 'application/json'})
}

/** Starts the heartbeat; returns the release that stops it (waiting for a beat in flight, so none recreates the claim) and deletes the claim. */
function holdClaim(storage: StorageBackend, claim: string, options: ClaimOptions): () => Promise<void> {
  let beat: Promise<unknown> = Promise.resolve()
  const timer = options.heartbeatMs
    ? setInterval(() => {
        beat = beat.then(() => writeClaim(storage, claim, options.heartbeatMs)).catch((error: unknown) => options.onHeartbeatError?.(error))
      }, options.heartbeatMs)
    : undefined
  timer?.unref()
  return async () => {
    clearInterval(timer)
    await beat
    await storage.delete(claim)
  }
}

async function keysUnder(storage: StorageBackend, id: string): Promise<string[]> {
  const keys: string[] = []
  // `<id>` itself, `<id>.meta.json`, `<id>.<token>.partial`, and the same id encrypted (`<id>.age…`).
  // An encrypted id lists under its unencrypted form too: `x.sql.gz` and `x.sql.gz.age` never share a timestamp and sequence.
  for await (const object of storage.list(id.replace(/\.age$/, ''))) keys.push(object.key)
  return keys
}
