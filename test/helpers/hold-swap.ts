import {setTimeout as sleep} from 'node:timers/promises'
import {Client} from 'pg'

import type {PgCluster} from './postgres'

const literal = (text: string) => `'${text.replaceAll("'", "''")}'`
const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`

/** The role whose per-database setting pauses the carry-over step (see holdSwapBetweenRenames). */
export const SWAP_PROBE_ROLE = 'dbb_swap_probe'

/**
 * Gives `target` a per-role setting, so a restore into it has a carry-over step that
 * holdSwapBetweenRenames can pause. Call before the restore starts (its plan reads the target).
 */
export async function prepareSwapHold(cluster: PgCluster, target: string): Promise<void> {
  await cluster.psql(`DO $$BEGIN CREATE ROLE ${SWAP_PROBE_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END$$`)
  await cluster.psql(`ALTER ROLE ${SWAP_PROBE_ROLE} IN DATABASE ${quoted(target)} SET work_mem = '2MB'`)
}

export interface SwapHold {
  /** The backend pid of the swap's transaction, waiting at its second RENAME. */
  swapperPid: string
  /** Lets the swap go on (or fail, if its backend was terminated) and closes the holding sessions. */
  release(): Promise<void>
}

/**
 * Holds a running restore's swap transaction between its two RENAMEs: a lock on the staging
 * database's pg_database row does it, but the carry-over step just before the swap writes that row
 * too, so the lock is taken only once the carry-over has passed it. Session A's uncommitted
 * per-role setting pauses the carry-over at a later step while session B takes the row lock; A
 * then lets go, the carry-over finishes and the swap runs into B's lock.
 */
export async function holdSwapBetweenRenames(cluster: PgCluster, staging: string): Promise<SwapHold> {
  const session = () => {
    const client = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'postgres'})
    client.on('error', () => {})
    return client
  }

  const waitFor = async (sql: string, what: string) => {
    let found = ''
    for (let attempt = 0; (found = await cluster.psql(sql)) === ''; attempt++) {
      if (attempt > 1200) throw new Error(`never saw ${what}`)
      await sleep(50)
    }

    return found
  }

  const holdCarryOver = session()
  const holdSwap = session()
  const close = () => Promise.all([holdCarryOver.end().catch(() => {}), holdSwap.end().catch(() => {})]).then(() => {})
  try {
    await Promise.all([holdCarryOver.connect(), holdSwap.connect()])
    await waitFor(`SELECT datname FROM pg_database WHERE datname = ${literal(staging)}`, 'the staging database')
    await holdCarryOver.query('BEGIN')
    await holdCarryOver.query(`ALTER ROLE ${SWAP_PROBE_ROLE} IN DATABASE ${quoted(staging)} SET work_mem = '1MB'`)
    await waitFor(`SELECT pid FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock' AND query LIKE 'ALTER ROLE %'`, 'the carry-over waiting')
    await holdSwap.query('BEGIN')
    await holdSwap.query(`ALTER DATABASE ${quoted(staging)} CONNECTION LIMIT 7`)
    await holdCarryOver.query('ROLLBACK')
    const swapperPid = await waitFor(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock' AND query LIKE 'ALTER DATABASE %RENAME TO%'`,
      'the swap at its second RENAME',
    )
    return {
      swapperPid,
      async release() {
        await holdSwap.query('ROLLBACK').catch(() => {})
        await close()
      },
    }
  } catch (error) {
    await close()
    throw error
  }
}
