import {setTimeout as sleep} from 'node:timers/promises'
import {Client, escapeIdentifier} from 'pg'

import type {DatabaseConfig} from '../config'
import {withClient} from '../db/connection'
import {OperationError, UsageError, errorMessage} from '../errors'

/** PostgreSQL truncates identifiers to 63 bytes; a longer name would silently address another database. */
const MAX_IDENTIFIER_BYTES = 63

export function checkDatabaseName(name: string, flag = '--target-db'): string {
  if (name.trim() === '' || name.includes('\0') || Buffer.byteLength(name) > MAX_IDENTIFIER_BYTES) {
    throw new UsageError(`${flag}: must be a database name of 1 to ${MAX_IDENTIFIER_BYTES} bytes (example: ${flag} app_restore_drill)`)
  }

  if (name === 'template0' || name === 'template1') throw new UsageError(`${flag}: ${name} is a template database and cannot be a restore target`)
  return name
}

/**
 * The database to run DROP/CREATE from: never the target itself (a session cannot drop the
 * database it is connected to). `template1` when the target is `postgres`, which works because
 * the new database is created from template0, not template1.
 */
export function maintenanceDatabase(target: string): string {
  return target === 'postgres' ? 'template1' : 'postgres'
}

export interface RecreateResult {
  /** The target existed before and was dropped. */
  replaced: boolean
  /** Other sessions that were connected to the target and were terminated. */
  terminatedSessions: number
}

/**
 * Replaces `target` with a new, empty database owned by the connecting user. Other sessions on it
 * are terminated first (they would block DROP DATABASE). The new database is created from
 * template0, as pg_dump's documentation advises for plain dumps: objects someone added to
 * template1 (extensions, tables) would otherwise collide with the dump's own CREATE statements.
 */
export async function recreateDatabase(database: DatabaseConfig, target: string): Promise<RecreateResult> {
  return withClient(
    database,
    async (client) => {
      const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [target])
      const replaced = (existing.rowCount ?? 0) > 0
      let terminatedSessions = 0
      if (replaced) {
        try {
          terminatedSessions = await terminateSessions(client, target)
          await dropDatabase(client, target)
        } catch (error) {
          throw new OperationError(`could not drop database "${target}" (it is unchanged): ${errorMessage(error)}`)
        }
      }

      try {
        await client.query(`CREATE DATABASE ${escapeIdentifier(target)} TEMPLATE template0`)
      } catch (error) {
        const dropped = replaced ? ' (the old one was already dropped)' : ''
        throw new OperationError(`could not create database "${target}"${dropped}: ${errorMessage(error)}`)
      }

      return {replaced, terminatedSessions}
    },
    {database: maintenanceDatabase(target)},
  )
}

async function terminateSessions(client: Client, target: string): Promise<number> {
  const result = await client.query<{terminated: boolean}>(
    'SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [target],
  )
  return result.rows.filter((row) => row.terminated).length
}

async function dropDatabase(client: Client, target: string): Promise<void> {
  const {rows} = await client.query<{server_version_num: string}>('SHOW server_version_num')
  const quoted = escapeIdentifier(target)
  // PostgreSQL 13+ terminates remaining sessions itself, closing the race with clients that reconnect.
  if (Number(rows[0].server_version_num) >= 130_000) {
    await client.query(`DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`)
    return
  }

  // Older servers: terminated backends take a moment to exit, and a client may reconnect; retry briefly.
  for (let attempt = 1; ; attempt++) {
    try {
      await client.query(`DROP DATABASE IF EXISTS ${quoted}`)
      return
    } catch (error) {
      const beingAccessed = (error as {code?: string}).code === '55006'
      if (!beingAccessed || attempt >= 20) throw error
      await sleep(250)
      await terminateSessions(client, target)
    }
  }
}
