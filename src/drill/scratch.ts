import {createHash} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'
import {type Client, escapeIdentifier, escapeLiteral} from 'pg'

import {OperationError} from '../errors'
import {STAGING_CONNECTION_LIMIT, dropDatabase} from '../restore/database'

/**
 * The scratch database a drill restores into: `dbb_drill_<8 hex>`, the hex the start of
 * sha256(source database name), so each source database has one reserved scratch name per server.
 * Like a restore's staging database it is created with STAGING_CONNECTION_LIMIT in the CREATE
 * itself and then carries a marker comment; a database with that name that dbb cannot prove it
 * made (no marker, and not the unmarked shape of a drill killed between CREATE and COMMENT) is
 * never dropped or written: the drill refuses.
 */
export const SCRATCH_NAME = /^dbb_drill_[0-9a-f]{8}$/
const MARKER_PREFIX = 'dbb-drill-scratch '

export interface ScratchMarker {
  source: string
  backupId: string
  startedAt: string
  pid: number
}

export function scratchDatabaseName(source: string): string {
  return `dbb_drill_${createHash('sha256').update(source).digest('hex').slice(0, 8)}`
}

/** The maintenance database drills connect to and take their lock in (never the scratch database itself). */
export const DRILL_MAINTENANCE_DATABASE = 'postgres'

function lockKey(scratch: string): string {
  return createHash('sha256').update(`dbb drill\0${scratch}`).digest().readBigInt64BE(0).toString()
}

/**
 * The advisory lock a drill holds on `client` from before it looks at the scratch name until it
 * has dropped it: one drill per scratch name and server (across dbb replicas too), and a scratch
 * database found while holding it is a dead drill's leftover. A drill killed a moment ago holds
 * it until its server session notices the closed connection: wait briefly.
 */
export async function lockScratch(client: Client, scratch: string, waitMs = 5000): Promise<boolean> {
  const deadline = Date.now() + waitMs
  for (;;) {
    const {rows} = await client.query<{locked: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [lockKey(scratch)])
    if (rows[0].locked) return true
    if (Date.now() >= deadline) return false
    await sleep(250)
  }
}

export async function unlockScratch(client: Client, scratch: string): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1::bigint)', [lockKey(scratch)])
}

type ScratchState = {kind: 'absent'} | {kind: 'leftover'; marker?: ScratchMarker} | {kind: 'foreign'; comment: string | null}

/** Whether the scratch name is free, a drill's leftover (marked, or created and killed before its marker), or someone else's database. */
export async function inspectScratch(client: Client, scratch: string): Promise<ScratchState> {
  const {rows} = await client.query<{limit: number; comment: string | null}>(
    `SELECT datconnlimit AS limit, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`,
    [scratch],
  )
  if (rows.length === 0) return {kind: 'absent'}
  const [{limit, comment}] = rows
  if (comment === null && limit === STAGING_CONNECTION_LIMIT) return {kind: 'leftover'}
  const marker = parseMarker(comment)
  return marker ? {kind: 'leftover', marker} : {kind: 'foreign', comment}
}

function parseMarker(comment: string | null): ScratchMarker | undefined {
  if (!comment?.startsWith(MARKER_PREFIX)) return undefined
  try {
    const marker = JSON.parse(comment.slice(MARKER_PREFIX.length)) as ScratchMarker
    return typeof marker.source === 'string' && typeof marker.backupId === 'string' ? marker : undefined
  } catch {
    return undefined
  }
}

/** Drops a dead drill's leftover; refuses (throws) for a database dbb did not make. Returns whether a leftover was dropped. */
export async function clearScratch(client: Client, scratch: string): Promise<boolean> {
  const state = await inspectScratch(client, scratch)
  if (state.kind === 'absent') return false
  if (state.kind === 'foreign') {
    throw new OperationError(
      `database "${scratch}" exists but is not a scratch database dbb can prove it made (no dbb drill marker comment); ` +
        `dbb reserves this name for restore drills and never touches a database it did not create: rename or drop it yourself`,
    )
  }

  await dropDatabase(client, scratch)
  return true
}

export async function createScratch(client: Client, scratch: string, marker: ScratchMarker): Promise<void> {
  await client.query(`CREATE DATABASE ${escapeIdentifier(scratch)} TEMPLATE template0 CONNECTION LIMIT ${STAGING_CONNECTION_LIMIT}`)
  await client.query(`COMMENT ON DATABASE ${escapeIdentifier(scratch)} IS ${escapeLiteral(`${MARKER_PREFIX}${JSON.stringify(marker)}`)}`)
}
