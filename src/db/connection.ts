import {Client} from 'pg'

import type {ToolEnvironment} from '../backup/child-process'
import {DEFAULT_PASSFILE, homePassfile} from '../config'
import type {DatabaseConfig} from '../config'
import {OperationError, errorMessage} from '../errors'
import {registerSecret} from '../secrets'
import {PGPASS_LINE_FORMAT, passwordFromPassfile} from './pgpass'

/**
 * The password for `database` (or another database on the same server, e.g. a restore target):
 * the one rule every connection follows, dbb's own queries and the client programs alike.
 * DB_PASSWORD or PGPASSWORD as loadConfig found them, else the first matching line of the pgpass
 * file it chose (read here, by dbb, so the file's mode does not matter to libpq). Throws when
 * that file cannot be read, naming the file, the user and the cause.
 */
export function resolvePassword(database: DatabaseConfig, overrides: {database?: string} = {}): string | undefined {
  if (database.password !== undefined) return registered(database.password)
  if (database.passfile === undefined) return undefined
  try {
    return registered(passwordFromPassfile(database.passfile, {...database, database: overrides.database ?? database.database}))
  } catch (error) {
    throw new OperationError(errorMessage(error))
  }
}

/** A password found outside the settings (PGPASSWORD, a pgpass line) is a secret to redact too. */
function registered(password: string | undefined): string | undefined {
  registerSecret(password)
  return password
}

/**
 * The libpq variables for PostgreSQL client programs that connect (pg_dump, psql, pg_basebackup,
 * pg_receivewal); child-process.ts adds PATH, locale and HOME and nothing else. Connection
 * settings travel as libpq variables, never as arguments (a command line is visible to every
 * user through /proc). The password dbb resolved goes in as PGPASSWORD, in this child's
 * environment only: never PGPASSFILE, which libpq ignores unless its mode is 0600 or less.
 */
export function libpqEnvironment(database: DatabaseConfig, overrides: {database?: string} = {}): ToolEnvironment {
  const env: Record<string, string | undefined> = {}
  // TLS and timeout settings the operator gave libpq; the password variables are never copied.
  for (const [name, value] of Object.entries(process.env)) if (LIBPQ_PASSTHROUGH.includes(name)) env[name] = value
  env.PGHOST = database.host
  env.PGPORT = String(database.port)
  env.PGUSER = database.user
  env.PGDATABASE = overrides.database ?? database.database
  env.PGAPPNAME = 'dbb'
  env.PGCONNECT_TIMEOUT ??= '10'
  const password = resolvePassword(database, overrides)
  if (password !== undefined) env.PGPASSWORD = password
  return env
}

/** libpq variables passed through from dbb's environment: transport security and timeouts, nothing secret. */
const LIBPQ_PASSTHROUGH = [
  'PGSSLMODE',
  'PGSSLROOTCERT',
  'PGSSLCERT',
  'PGSSLKEY',
  'PGSSLCRL',
  'PGSSLCRLDIR',
  'PGSSLSNI',
  'PGSSLNEGOTIATION',
  'PGSSLMINPROTOCOLVERSION',
  'PGSSLMAXPROTOCOLVERSION',
  'PGGSSENCMODE',
  'PGCHANNELBINDING',
  'PGREQUIREAUTH',
  'PGTARGETSESSIONATTRS',
  'PGCONNECT_TIMEOUT',
]

/** A connected node-postgres client for dbb's own small queries (version, health, admin). */
export async function connect(database: DatabaseConfig, overrides: {database?: string} = {}): Promise<Client> {
  const target = {...database, database: overrides.database ?? database.database}
  const password = resolvePassword(database, overrides)
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
    const cause = password === undefined && isPasswordRequired(error) ? noPasswordFound(database, target.database) : describePgError(error)
    throw new Error(`cannot connect to PostgreSQL at ${target.host}:${target.port} as ${target.user}: ${cause}`)
  }

  return client
}

/**
 * A session that holds an advisory lock must outlive its idle periods: a server or role with
 * `idle_session_timeout` (PostgreSQL 14+) or `idle_in_transaction_session_timeout` would end it
 * while the work it guards runs elsewhere (psql importing), and the lock would go with it — letting
 * a second restore or a leftover cleaner in. Both settings are user-settable, so no privilege is
 * needed; idle_session_timeout does not exist before 14 and must not be named there.
 */
export async function keepSessionForLocks(client: Client): Promise<void> {
  const {rows} = await client.query<{version: string}>("SELECT current_setting('server_version_num') AS version")
  await client.query('SET idle_in_transaction_session_timeout = 0')
  if (Number(rows[0].version) >= 140_000) await client.query('SET idle_session_timeout = 0')
}

/** node-postgres' and libpq's words for "the server asked for a password and there was none". */
function isPasswordRequired(error: unknown): boolean {
  return /password must be a string|no password supplied|password authentication failed/i.test(errorMessage(error))
}

/** What was looked for and where, so the operator knows which one to set. */
export function noPasswordFound(database: DatabaseConfig, databaseName: string, env: NodeJS.ProcessEnv = process.env): string {
  const searched =
    database.passfile === undefined
      ? `no pgpass file (PGPASSFILE unset, ${DEFAULT_PASSFILE} and ${homePassfile(env) ?? '~/.pgpass'} do not exist)`
      : `no line of ${database.passfile} matches ${database.host}:${database.port}:${databaseName}:${database.user}`
  return (
    `the server requires a password and none was found: DB_PASSWORD and PGPASSWORD are unset, and ${searched}. ` +
    `Set DB_PASSWORD (or DB_PASSWORD_FILE), or add a pgpass line ${PGPASS_LINE_FORMAT}, e.g. ${database.host}:${database.port}:*:${database.user}:<password>`
  )
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
