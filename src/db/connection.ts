import {Client} from 'pg'

import type {DatabaseConfig} from '../config'
import {passwordFromPassfile} from './pgpass'

/**
 * The environment for PostgreSQL client programs (pg_dump, psql, pg_basebackup). Connection
 * settings travel as libpq variables, never as arguments (a password on a command line is visible
 * to every user through /proc). The child gets a minimal environment: dbb's own secrets
 * (API token, cloud keys) are not passed on to programs that have no use for them.
 */
export function libpqEnvironment(database: DatabaseConfig, overrides: {database?: string} = {}): NodeJS.ProcessEnv {
  const inherited = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'PGSSLMODE', 'PGSSLROOTCERT', 'PGSSLCERT', 'PGSSLKEY', 'PGCONNECT_TIMEOUT']
  const env: NodeJS.ProcessEnv = {}
  for (const name of inherited) if (process.env[name] !== undefined) env[name] = process.env[name]
  env.PGHOST = database.host
  env.PGPORT = String(database.port)
  env.PGUSER = database.user
  env.PGDATABASE = overrides.database ?? database.database
  env.PGAPPNAME = 'dbb'
  env.PGCONNECT_TIMEOUT ??= '10'
  if (database.password !== undefined) env.PGPASSWORD = database.password
  else if (database.passfile !== undefined) env.PGPASSFILE = database.passfile
  return env
}

/** A connected node-postgres client for dbb's own small queries (version, health, admin). */
export async function connect(database: DatabaseConfig, overrides: {database?: string} = {}): Promise<Client> {
  const target = {...database, database: overrides.database ?? database.database}
  let {password} = database
  if (password === undefined && database.passfile !== undefined) {
    password = await passwordFromPassfile(database.passfile, target).catch(() => undefined)
  }

  const client = new Client({
    host: target.host,
    port: target.port,
    user: target.user,
    database: target.database,
    password,
    application_name: 'dbb',
    connectionTimeoutMillis: 10_000,
  })
  try {
    await client.connect()
  } catch (error) {
    await client.end().catch(() => {})
    throw new Error(`cannot connect to PostgreSQL at ${target.host}:${target.port} as ${target.user}: ${describePgError(error)}`)
  }

  return client
}

export async function withClient<T>(
  database: DatabaseConfig,
  work: (client: Client) => Promise<T>,
  overrides: {database?: string} = {},
): Promise<T> {
  const client = await connect(database, overrides)
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/** The server's version, e.g. `15.18`. */
export async function serverVersion(database: DatabaseConfig): Promise<string> {
  return withClient(database, async (client) => {
    const result = await client.query<{server_version: string}>('SHOW server_version')
    return result.rows[0].server_version.split(' ')[0]
  })
}

function describePgError(error: unknown): string {
  const {code, message} = (error ?? {}) as {code?: string; message?: string}
  if (code === 'ECONNREFUSED') return 'connection refused (is the server running and listening on that address?)'
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found'
  return message ?? String(error)
}
