import {createHash} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'
import {Client, escapeIdentifier, escapeLiteral} from 'pg'

import type {DatabaseConfig} from '../config'
import {connect} from '../db/connection'
import {OperationError, UsageError, errorMessage} from '../errors'

/** PostgreSQL truncates identifiers to 63 bytes; a longer name would silently address another database. */
const MAX_IDENTIFIER_BYTES = 63

export function checkDatabaseName(name: string, flag = '--target-db'): string {
  if (name.trim() === '' || name.includes('\0') || Buffer.byteLength(name) > MAX_IDENTIFIER_BYTES) {
    throw new UsageError(`${flag}: must be a database name of 1 to ${MAX_IDENTIFIER_BYTES} bytes (example: ${flag} app_restore_drill)`)
  }

  if (name === 'template0' || name === 'template1') throw new UsageError(`${flag}: ${name} is a template database and cannot be a restore target`)
  if (LEFTOVER_NAME.test(name) || PREVIOUS_NAME.test(name)) throw new UsageError(`${flag}: ${name} is a name dbb reserves for its own staging and previous copies`)
  return name
}

/**
 * The database dbb's own sessions connect to: never the target itself (a session cannot rename or
 * drop the database it is connected to). `template1` when the target is `postgres`, which works
 * because staging databases are created from template0, not template1.
 */
export function maintenanceDatabase(target: string): string {
  return target === 'postgres' ? 'template1' : 'postgres'
}

/** The databases a restore into `target` works with; all derived from the target's name alone. */
export interface RestoreDatabaseNames {
  target: string
  /** Where the dump is imported; becomes the target at the swap. */
  staging: string
  /** What the old target is renamed to at the swap and dropped right after (without --keep-previous). */
  replaced: string
  /** What the old target is renamed to, and kept as, with --keep-previous. */
  previous: string
}

const LEFTOVER_NAME = /_dbb_(staging|replaced)_[0-9a-f]{8}$/
const PREVIOUS_NAME = /_dbb_previous_[0-9a-f]{8}$/

/**
 * `<target>_dbb_staging_<8 hex>` and friends: the hex is the start of sha256(target), so two targets
 * whose names share a 38-byte prefix still get distinct names, and the target part is cut on a
 * character boundary to stay within PostgreSQL's 63 bytes (non-ASCII names included).
 */
export function restoreDatabaseNames(target: string): RestoreDatabaseNames {
  const hash = createHash('sha256').update(target).digest('hex').slice(0, 8)
  const derive = (kind: string) => {
    const suffix = `_dbb_${kind}_${hash}`
    return `${truncateUtf8(target, MAX_IDENTIFIER_BYTES - Buffer.byteLength(suffix))}${suffix}`
  }

  return {target, staging: derive('staging'), replaced: derive('replaced'), previous: derive('previous')}
}

function truncateUtf8(text: string, maxBytes: number): string {
  let result = ''
  for (const character of text) {
    if (Buffer.byteLength(result + character) > maxBytes) break
    result += character
  }

  return result
}

/**
 * A staging or replaced database carries this comment, so a leftover is recognised by more than
 * its name: `dbb-restore-leftover {"kind":"staging","target":"shop",…}`.
 */
const MARKER_PREFIX = 'dbb-restore-leftover '

export interface LeftoverMarker {
  kind: 'staging' | 'replaced'
  target: string
  backupId: string
  startedAt: string
  /** The dbb process that made it (for the listing; liveness is decided by the advisory lock). */
  pid: number
}

export function leftoverComment(marker: LeftoverMarker): string {
  return `${MARKER_PREFIX}${JSON.stringify(marker)}`
}

export interface Leftover {
  name: string
  /** Parsed marker; undefined when the name looks like dbb's but the comment does not say so (never dropped). */
  marker?: LeftoverMarker
}

/** Databases named like dbb's staging/replaced databases, with their marker when it is genuine (name and comment agree). */
export async function findLeftovers(client: Client): Promise<Leftover[]> {
  const {rows} = await client.query<{datname: string; comment: string | null}>(
    `SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname ~ '_dbb_(staging|replaced)_[0-9a-f]{8}$' ORDER BY datname`,
  )
  return rows.map(({datname, comment}) => ({name: datname, marker: parseMarker(datname, comment)}))
}

function parseMarker(name: string, comment: string | null): LeftoverMarker | undefined {
  if (!comment?.startsWith(MARKER_PREFIX)) return undefined
  try {
    const marker = JSON.parse(comment.slice(MARKER_PREFIX.length)) as LeftoverMarker
    if ((marker.kind !== 'staging' && marker.kind !== 'replaced') || typeof marker.target !== 'string') return undefined
    return restoreDatabaseNames(marker.target)[marker.kind] === name ? marker : undefined
  } catch {
    return undefined
  }
}

/**
 * The advisory lock a restore into `target` holds from before it creates its staging database
 * until it has finished: a second restore into the same target is refused, and the leftover
 * cleaner (pg_try_advisory_lock) never drops a staging database that a live restore still uses.
 * Advisory locks belong to one database, so it is always taken in maintenanceDatabase(target).
 */
export function restoreLockKey(target: string): string {
  return createHash('sha256').update(`dbb restore\0${target}`).digest().readBigInt64BE(0).toString()
}

export async function tryRestoreLock(client: Client, target: string): Promise<boolean> {
  const {rows} = await client.query<{locked: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [restoreLockKey(target)])
  return rows[0].locked
}

export async function releaseRestoreLock(client: Client, target: string): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1::bigint)', [restoreLockKey(target)])
}

export interface CleanedLeftovers {
  dropped: string[]
  /** Leftovers a running restore still uses, or that carry no genuine dbb marker: listed, never dropped. */
  kept: {name: string; reason: string}[]
}

/**
 * Drops the staging and replaced databases that crashed restores left behind — only those whose
 * marker is genuine and whose restore is no longer running (its advisory lock is free).
 * `session` holds this restore's own lock in `sessionDatabase`.
 */
export async function cleanLeftovers(database: DatabaseConfig, session: Client, sessionDatabase: string): Promise<CleanedLeftovers> {
  const result: CleanedLeftovers = {dropped: [], kept: []}
  for (const leftover of await findLeftovers(session)) {
    const {marker} = leftover
    if (!marker) {
      result.kept.push({name: leftover.name, reason: 'named like a dbb staging database but has no dbb marker comment; drop it yourself if it is one'})
      continue
    }

    const lockDatabase = maintenanceDatabase(marker.target)
    const client = lockDatabase === sessionDatabase ? session : await connect(database, {database: lockDatabase})
    try {
      if (!(await tryRestoreLock(client, marker.target))) {
        result.kept.push({name: leftover.name, reason: `a restore into "${marker.target}" is running (dbb pid ${marker.pid} on its host)`})
        continue
      }

      try {
        await dropDatabase(client, leftover.name)
        result.dropped.push(leftover.name)
      } finally {
        await releaseRestoreLock(client, marker.target)
      }
    } catch (error) {
      result.kept.push({name: leftover.name, reason: `could not drop it: ${errorMessage(error)}`})
    } finally {
      if (client !== session) await client.end().catch(() => {})
    }
  }

  return result
}

/**
 * The connection limit a staging database is created with. CREATE DATABASE cannot carry a comment,
 * and a kill while it runs still commits it (the server finishes the command before it notices
 * the closed connection): the limit, set in the same statement, is what still says "dbb made this"
 * when the marker comment never came. The import needs a handful of connections; the carry-over
 * step sets the real limit before the swap.
 */
export const STAGING_CONNECTION_LIMIT = 9973

/** CREATE DATABASE from template0 (objects someone added to template1 would collide with the dump's own), then its marker. */
export async function createStagingDatabase(client: Client, name: string, options: {owner?: string; marker: LeftoverMarker}): Promise<void> {
  const owner = options.owner === undefined ? '' : ` OWNER ${escapeIdentifier(options.owner)}`
  await client.query(`CREATE DATABASE ${escapeIdentifier(name)} TEMPLATE template0${owner} CONNECTION LIMIT ${STAGING_CONNECTION_LIMIT}`)
  await client.query(`COMMENT ON DATABASE ${escapeIdentifier(name)} IS ${escapeLiteral(leftoverComment(options.marker))}`)
}

/** This restore's own staging name, created by a restore killed before it could write the marker comment. */
export async function isUnmarkedStaging(client: Client, name: string): Promise<boolean> {
  const {rows} = await client.query<{limit: number; comment: string | null}>(
    `SELECT datconnlimit AS limit, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`,
    [name],
  )
  return rows.length === 1 && rows[0].limit === STAGING_CONNECTION_LIMIT && rows[0].comment === null
}

export async function databaseComment(client: Client, name: string): Promise<string | null> {
  const {rows} = await client.query<{comment: string | null}>(
    `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`,
    [name],
  )
  return rows[0]?.comment ?? null
}

export async function terminateSessions(client: Client, name: string): Promise<number> {
  const result = await client.query<{terminated: boolean}>(
    'SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [name],
  )
  return result.rows.filter((row) => row.terminated).length
}

/** DROP DATABASE … WITH (FORCE) (PostgreSQL 13+ terminates remaining sessions itself); terminate-and-retry before 13. */
export async function dropDatabase(client: Client, name: string): Promise<void> {
  const {rows} = await client.query<{server_version_num: string}>('SHOW server_version_num')
  const quoted = escapeIdentifier(name)
  if (Number(rows[0].server_version_num) >= 130_000) {
    await client.query(`DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`)
    return
  }

  for (let attempt = 1; ; attempt++) {
    try {
      await client.query(`DROP DATABASE IF EXISTS ${quoted}`)
      return
    } catch (error) {
      const beingAccessed = (error as {code?: string}).code === '55006'
      if (!beingAccessed || attempt >= 20) throw error
      await sleep(250)
      await terminateSessions(client, name)
    }
  }
}

export interface SwapOptions {
  names: RestoreDatabaseNames
  targetExists: boolean
  keepPrevious: boolean
  /** The comment the restored target carries after the swap (the old target's, unless a fidelity step decides otherwise). */
  targetComment: string | null
  /** The marker the old target gets when it is renamed to `replaced` (so a crash before its drop is cleaned up later). */
  replacedMarker: LeftoverMarker
}

export interface SwapResult {
  terminatedSessions: number
  /** Where the old target went: `previous` (kept) or `replaced` (to be dropped), or undefined when there was none. */
  oldTargetNow?: string
}

/**
 * The critical section, as ONE transaction on `swapper` (connected to the maintenance database):
 *
 *   BEGIN; terminate the target's sessions; ALTER DATABASE target RENAME TO replaced|previous;
 *   ALTER DATABASE staging RENAME TO target; COMMENT ON both; COMMIT
 *
 * PostgreSQL allows ALTER DATABASE … RENAME in a transaction block, so the swap is atomic: until
 * COMMIT nothing is visible, and a process that dies inside it (its connection closes) leaves the
 * server to roll it back — the target is then exactly what it was. The first RENAME takes an
 * ACCESS EXCLUSIVE lock on the target database, and new connections wait on that lock during
 * connection start (postinit.c), so nobody slips in between it and COMMIT; after COMMIT they
 * connect to the restored database. Sessions that connected between the termination and the
 * lock would make RENAME wait (up to 5 s) and fail with "being accessed by other users", so
 * `terminator` (a second session) keeps terminating the target's sessions while the swap runs.
 * Its connection state (`datallowconn`) is never changed, so there is nothing to restore after.
 */
export async function swapDatabases(swapper: Client, terminator: Client, options: SwapOptions): Promise<SwapResult> {
  const {names} = options
  const target = escapeIdentifier(names.target)
  const oldTargetNow = options.targetExists ? (options.keepPrevious ? names.previous : names.replaced) : undefined
  let swapping = true
  const keepTerminating = (async () => {
    let terminated = 0
    while (swapping && options.targetExists) {
      terminated += await terminateSessions(terminator, names.target).catch(() => 0)
      await sleep(100)
    }

    return terminated
  })()

  let terminatedSessions = 0
  try {
    await swapper.query('BEGIN')
    if (oldTargetNow !== undefined) {
      terminatedSessions = await terminateSessions(swapper, names.target)
      await swapper.query(`ALTER DATABASE ${target} RENAME TO ${escapeIdentifier(oldTargetNow)}`)
      if (!options.keepPrevious) {
        await swapper.query(`COMMENT ON DATABASE ${escapeIdentifier(oldTargetNow)} IS ${escapeLiteral(leftoverComment(options.replacedMarker))}`)
      }
    }

    await swapper.query(`ALTER DATABASE ${escapeIdentifier(names.staging)} RENAME TO ${target}`)
    await swapper.query(`COMMENT ON DATABASE ${target} IS ${options.targetComment === null ? 'NULL' : escapeLiteral(options.targetComment)}`)
    await swapper.query('COMMIT')
  } catch (error) {
    await swapper.query('ROLLBACK').catch(() => {})
    throw new OperationError(`the swap was rolled back, database "${names.target}" is unchanged: ${errorMessage(error)}`, {cause: error})
  } finally {
    swapping = false
    terminatedSessions += await keepTerminating
  }

  return {terminatedSessions, oldTargetNow}
}
