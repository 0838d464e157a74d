import {randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import type {CodecName} from '../compress/codecs'
import type {StorageBackend} from '../storage/contract'
import {newBackupId} from './naming'

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
 * most a minute). Prune measures an id's age from the newest write of any of its objects, so a
 * backup whose pg_dump waits on a lock for hours keeps its `.partial` files and its claim; on S3,
 * where a multipart upload in progress has no object yet, the claim is all there is to see.
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

/** A quarter of the grace, so three beats can fail before prune would see the id as quiet; at most a minute, at least 100 ms. */
export function heartbeatInterval(orphanGraceMs: number): number {
  return Math.max(100, Math.min(60_000, Math.floor(orphanGraceMs / 4)))
}

const ATTEMPTS = 8

export async function claimBackupId(
  storage: StorageBackend,
  prefix: string,
  startedAt: Date,
  kind: 'sql' | 'tar',
  options: ClaimOptions & {codec?: CodecName} = {},
): Promise<IdClaim> {
  const withdrawn = new Set<string>()
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const id = await newBackupId(prefix, startedAt, async (candidate) => withdrawn.has(candidate) || (await keysUnder(storage, candidate)).length > 0, kind, options.codec)
    const claim = `${id}.${randomBytes(8).toString('hex')}.partial`
    await writeClaim(storage, claim)
    const others = (await keysUnder(storage, id)).filter((key) => key !== claim)
    if (others.length === 0) return {id, release: holdClaim(storage, claim, options)}
    await storage.delete(claim)
    withdrawn.add(id)
    await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 100 * attempt))
  }

  throw new Error(`could not claim a backup id for ${prefix}: concurrent backups kept taking them (${ATTEMPTS} attempts)`)
}

function writeClaim(storage: StorageBackend, claim: string): Promise<unknown> {
  return storage.put(claim, Readable.from([Buffer.alloc(0)]), {overwrite: true, contentType: 'application/octet-stream'})
}

/** Starts the heartbeat; returns the release that stops it (waiting for a beat in flight, so none recreates the claim) and deletes the claim. */
function holdClaim(storage: StorageBackend, claim: string, options: ClaimOptions): () => Promise<void> {
  let beat: Promise<unknown> = Promise.resolve()
  const timer = options.heartbeatMs
    ? setInterval(() => {
        beat = beat.then(() => writeClaim(storage, claim)).catch((error: unknown) => options.onHeartbeatError?.(error))
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
  // `<id>` itself, `<id>.meta.json`, `<id>.<token>.partial`; never another id (they differ before the extension).
  for await (const object of storage.list(id)) keys.push(object.key)
  return keys
}
