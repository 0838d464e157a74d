import {createHash} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'
import type {Client} from 'pg'

import type {DatabaseConfig, ScheduleConfig} from '../config'
import {connect} from '../db/connection'
import {AbortedError, errorMessage} from '../errors'
import type {Logger} from '../logger'

/**
 * Two or more `dbb serve` replicas (a Deployment with replicas: 2) coordinate through the
 * database itself: a job — a backup or a restore drill of DB_NAME — runs only while its replica
 * holds a PostgreSQL session-level advisory lock, on a session of its own, for the job's whole
 * duration. The server releases it when that session ends, so a replica that dies mid-job frees
 * it without any cleanup. Backups and drills of one database share the lock: a drill never runs
 * while a backup of the same database does, on any replica.
 *
 * The lock lives in DB_NAME (advisory locks belong to one database), keyed by the database name,
 * so replicas pointed at the same database exclude each other and nothing else.
 */
export interface JobLease {
  release(): Promise<void>
  /** Called when the session holding the lock is lost (the lock with it): a long-running holder (the WAL streamer) must stop. */
  onLost?(listener: (error: Error) => void): void
}

/**
 * What a lock serializes across replicas. `job`: logical backups and drills of DB_NAME (one at a
 * time); `base-backup`: base backups of the cluster (one per slot, independent of logical jobs);
 * `wal-stream`: the one replica that runs pg_receivewal (the others stand by).
 */
export type JobLockPurpose = 'job' | 'base-backup' | 'wal-stream'

export function jobLockKey(databaseName: string, purpose: JobLockPurpose = 'job'): string {
  const name = purpose === 'job' ? 'dbb job' : `dbb ${purpose}`
  return createHash('sha256').update(`${name}\0${databaseName}`).digest().readBigInt64BE(0).toString()
}

export class JobLock {
  private readonly key: string

  constructor(
    private readonly database: DatabaseConfig,
    private readonly logger: Logger,
    purpose: JobLockPurpose = 'job',
  ) {
    this.key = jobLockKey(database.database, purpose)
  }

  /** The lease when no replica holds the lock now, undefined when one does; throws when the database cannot be reached. */
  async tryAcquire(): Promise<JobLease | undefined> {
    const client = await connect(this.database)
    try {
      const {rows} = await client.query<{locked: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [this.key])
      if (rows[0].locked) return this.lease(client)
    } catch (error) {
      await client.end().catch(() => {})
      throw error
    }

    await client.end().catch(() => {})
    return undefined
  }

  /**
   * For an API request: the lease, 'held' when another session holds the lock, or undefined when
   * the database cannot be reached now — the job then starts and fails on its own connection,
   * with that error, as it did before replicas were coordinated.
   */
  async tryAcquireForRequest(): Promise<JobLease | 'held' | undefined> {
    const lease = await this.tryAcquire().catch((error: unknown) => {
      this.logger.warn({event: 'job_lock.unreachable', error: errorMessage(error)}, 'could not take the replica job lock; the job will try again')
      return 'unreachable' as const
    })
    if (lease === 'unreachable') return undefined
    return lease ?? 'held'
  }

  /** Waits for the lock (another replica's job holds it), polling; the signal stops waiting. */
  async acquire(signal: AbortSignal, onWait: () => void, pollMs = 2000): Promise<JobLease> {
    let waited = false
    for (;;) {
      if (signal.aborted) throw new AbortedError('stopped while waiting for another replica\'s job')
      const lease = await this.tryAcquire()
      if (lease) return lease
      if (!waited) onWait()
      waited = true
      await sleep(pollMs, undefined, {signal}).catch(() => {})
    }
  }

  private lease(client: Client): JobLease {
    // A lost session loses the lock: another replica may start a job while this one still runs. Say so.
    let lost: ((error: Error) => void) | undefined
    client.on('error', (error) => {
      this.logger.warn({event: 'job_lock.session_lost', error: errorMessage(error)}, 'the session holding the replica job lock was lost')
      lost?.(error)
    })
    let released: Promise<void> | undefined
    return {
      onLost: (listener) => {
        lost = listener
      },
      release: () => {
        released ??= client
          .query('SELECT pg_advisory_unlock($1::bigint)', [this.key])
          .then(() => undefined)
          .catch(() => undefined)
          .then(() => client.end())
          .catch(() => undefined)
        return released
      },
    }
  }
}

/**
 * How far apart two replicas' timers may fire for the same slot (clock skew, timer jitter) and
 * still count as one slot. Half the shortest schedule (1 minute): replicas' clocks must agree
 * within it (NTP does far better).
 */
export const SLOT_TOLERANCE_MS = 30_000

/**
 * Whether the newest backup already serves the slot a scheduled job fired for — taken by another
 * replica while this one waited for the job lock. Interval: it is less than one interval old
 * (minus the tolerance) at the firing. Cron: it started at the firing or at most the tolerance before.
 */
export function slotTaken(schedule: ScheduleConfig, newest: {createdAt: string; durationMs: number} | undefined, firedAt: number): boolean {
  if (!newest) return false
  const startedAt = Date.parse(newest.createdAt)
  if (schedule.kind === 'interval') return startedAt + newest.durationMs > firedAt - schedule.intervalMs + SLOT_TOLERANCE_MS
  return startedAt >= firedAt - SLOT_TOLERANCE_MS
}

export type ReplicaStart<J> = {started: true; job: J} | {started: false; running: J} | {started: false; held: true}

/**
 * The API's single-flight rule across replicas: a local job in flight answers at once; otherwise
 * the job lock is taken before the job starts (and handed to it). Requests that arrive while one
 * is taking the lock wait for it and get its job, so 100 simultaneous POSTs still yield exactly
 * one job and 99 answers naming it.
 */
export function startAcrossReplicas<J, A = void>(
  lock: JobLock | undefined,
  local: () => J | undefined,
  start: (lease: JobLease | undefined, argument: A) => {started: true; job: J} | {started: false; running: J},
): (argument: A) => Promise<ReplicaStart<J>> {
  let pending: Promise<ReplicaStart<J>> | undefined
  return async (argument: A) => {
    const running = local()
    if (running) return {started: false, running}
    if (pending) {
      const first = await pending
      return first.started ? {started: false, running: first.job} : first
    }

    pending = (async (): Promise<ReplicaStart<J>> => {
      const lease = await lock?.tryAcquireForRequest()
      if (lease === 'held') return {started: false, held: true}
      const result = start(lease, argument)
      if (!result.started) await lease?.release()
      return result
    })()
    try {
      return await pending
    } finally {
      pending = undefined
    }
  }
}
