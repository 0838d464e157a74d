import {pipeline} from 'node:stream/promises'
import {Writable} from 'node:stream'

import {GLOBALS_TYPE} from '../backup/globals'
import {hashTap} from '../backup/hash-tap'
import {BackupMetadata, newestBackup, resolveBackup, scanBackups} from '../backup/metadata'
import {globalsPrefix} from '../backup/naming'
import {codecOfKey} from '../compress/codecs'
import {createObjectDecoder} from '../encrypt/age'
import type {DatabaseConfig} from '../config'
import {connect} from '../db/connection'
import {NotFoundError, OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {maintenanceDatabase} from './database'

/**
 * `dbb restore --globals`: creates the roles of a globals backup (pg_dumpall --globals-only) that
 * the server does not have, with their attributes, passwords, settings, comments and memberships —
 * and changes nothing that exists. The dump is never piped into psql as is: pg_dumpall writes
 * `ALTER ROLE x WITH … PASSWORD '…'` for every role, the restoring superuser included, which
 * would reset existing roles' passwords and attributes. Instead each statement is classified and
 * applied only when it concerns a role this restore created:
 *
 * - `CREATE ROLE r` for a role that is missing, then `ALTER ROLE r WITH …`, `ALTER ROLE r [IN
 *   DATABASE d] SET …`, `COMMENT ON ROLE r`, `SECURITY LABEL … ON ROLE r` for it;
 * - `GRANT g TO r …` (memberships) when the member r was created now and g exists or was created
 *   (GRANTED BY is dropped: the grant is recorded as made by the restoring role, which need not
 *   exist on the source); a new membership for an existing role would change what it may do;
 * - tablespaces are not created (their directories must exist on the new server first): reported;
 * - anything else is reported as skipped, never executed.
 *
 * With `alterExisting` (`dbb restore --globals --alter-roles`), existing roles are brought in line
 * with the globals too: their `ALTER ROLE` attributes (and password, when the globals have one),
 * settings, comments and the memberships the globals grant them. Nothing is ever revoked or dropped,
 * and the role running the restore is never altered (a `NOSUPERUSER` from the source would lock the
 * restore out halfway).
 *
 * Everything runs in one transaction: any error rolls back every role this run created or altered.
 */
export interface GlobalsRestoreResult {
  backupId: string
  /** Roles created now. */
  created: string[]
  /** Roles the backup has that already existed: left exactly as they were, unless listed in `altered`. */
  existing: string[]
  /** Existing roles changed to match the globals (--alter-roles only). */
  altered: string[]
  /** Memberships granted (`role → member`). */
  granted: string[]
  /** What was not applied and why (tablespaces, memberships of existing roles, unknown statements); never holds a password. */
  skipped: string[]
}

/** Globals are a few KiB; a larger "globals" is not one (and is not held in memory). */
const MAX_GLOBALS_BYTES = 64 * 1024 * 1024

/**
 * The globals backup to apply: `reference` (an id, or `latest`), else for a database restore the
 * newest globals stored no later than that backup (same run or older), else the newest.
 */
export async function resolveGlobals(storage: StorageBackend, namePrefix: string, reference?: string, notAfter?: BackupMetadata): Promise<BackupMetadata> {
  const prefix = globalsPrefix(namePrefix)
  if (reference !== undefined && reference !== 'latest') {
    const backup = await resolveBackup(storage, reference)
    if (backup.type !== GLOBALS_TYPE) throw new UsageError(`${backup.id} is a ${backup.type} backup, not cluster globals (ids of globals start with ${prefix}_)`)
    return backup
  }

  const missing = () => new NotFoundError(`no globals backup found under ${prefix}_ in ${storage.location} (backup run stores one with BACKUP_GLOBALS=true)`)
  if (notAfter) {
    const {backups} = await scanBackups(storage, {prefix, type: GLOBALS_TYPE})
    const candidate = backups.find((backup) => backup.createdAt <= notAfter.createdAt) ?? backups[0]
    if (!candidate) throw missing()
    return candidate
  }

  const newest = await newestBackup(storage, {prefix, type: GLOBALS_TYPE})
  if (!newest) throw missing()
  return newest
}

export async function restoreGlobals(
  deps: {database: DatabaseConfig; storage: StorageBackend; logger: Logger; identityFile?: string},
  backup: BackupMetadata,
  signal?: AbortSignal,
  options: {alterExisting?: boolean} = {},
): Promise<GlobalsRestoreResult> {
  const sql = await readGlobals(deps.storage, backup, signal, deps.identityFile)
  const statements = splitStatements(sql)
  const client = await connect(deps.database, {database: maintenanceDatabase(deps.database.database)}).catch((error: unknown) => {
    throw new OperationError(`globals: ${errorMessage(error)}; nothing was changed`)
  })
  try {
    const roles = new Set((await client.query<{rolname: string}>('SELECT rolname FROM pg_roles')).rows.map((row) => row.rolname))
    const databases = new Set((await client.query<{datname: string}>('SELECT datname FROM pg_database')).rows.map((row) => row.datname))
    const currentRole = (await client.query<{role: string}>('SELECT current_user AS role')).rows[0].role
    const plan = planGlobals(statements, roles, databases, {alterExisting: options.alterExisting, currentRole})
    let current: Step | undefined
    await client.query('BEGIN')
    try {
      for (const step of plan.apply) {
        current = step
        await client.query(step.sql)
      }

      current = undefined
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      // The statement may hold a password: name the role and the kind of statement, never the text.
      const failing = current?.label
      throw new OperationError(`globals from ${backup.id} could not be applied${failing ? ` (${failing})` : ''}: ${errorMessage(error)}; nothing was changed (the transaction was rolled back)`)
    }

    const result = {backupId: backup.id, created: plan.created, existing: plan.existing, altered: plan.altered, granted: plan.granted, skipped: plan.skipped}
    deps.logger.info(
      {event: 'restore.globals_applied', backupId: backup.id, created: plan.created, existing: plan.existing, altered: plan.altered, granted: plan.granted, skipped: plan.skipped.length},
      `globals applied: ${plan.created.length} role(s) created, ${plan.altered.length} existing altered, ${plan.existing.length - plan.altered.length} existing left unchanged`,
    )
    return result
  } finally {
    await client.end().catch(() => {})
  }
}

/** The stored globals, read once, sha256 and size checked against the sidecar before anything is applied. */
async function readGlobals(storage: StorageBackend, backup: BackupMetadata, signal?: AbortSignal, identityFile?: string): Promise<string> {
  const tap = hashTap()
  const chunks: Buffer[] = []
  let total = 0
  await pipeline(
    await storage.get(backup.id, {signal}),
    tap.stage,
    // Decrypt (an id ending in .age) and decompress with the codec the id names.
    createObjectDecoder(backup.id, codecOfKey(backup.id) ?? 'gzip', identityFile),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        total += chunk.length
        if (total > MAX_GLOBALS_BYTES) return callback(new OperationError(`${backup.id} decompresses to more than ${MAX_GLOBALS_BYTES} bytes: not a globals dump`))
        chunks.push(chunk)
        callback()
      },
    }),
    {signal},
  )
  if (tap.sizeBytes !== backup.sizeBytes || tap.sha256() !== backup.sha256) {
    throw new OperationError(`integrity check failed for ${backup.id}: read ${tap.sizeBytes} bytes with sha256 ${tap.sha256()}, its metadata says ${backup.sizeBytes} bytes with sha256 ${backup.sha256}; nothing was changed`)
  }

  return Buffer.concat(chunks).toString('utf8')
}

/**
 * SQL statements of a pg_dumpall script, without comments and psql meta-commands (`\restrict`,
 * `\connect`): split at `;` outside quoted literals and identifiers.
 */
export function splitStatements(sql: string): string[] {
  const statements: string[] = []
  let current = ''
  let quote: "'" | '"' | undefined
  let atLineStart = true
  for (let index = 0; index < sql.length; index++) {
    const char = sql[index]
    if (quote) {
      current += char
      if (char === quote) {
        if (sql[index + 1] === quote) current += sql[++index]
        else quote = undefined
      }

      continue
    }

    if (atLineStart && current.trim() === '' && (sql.startsWith('--', index) || char === '\\')) {
      // A comment or a meta-command: the rest of the line.
      const end = sql.indexOf('\n', index)
      index = end === -1 ? sql.length : end
      atLineStart = true
      continue
    }

    atLineStart = char === '\n'
    if (char === "'" || char === '"') quote = char
    if (char === ';') {
      if (current.trim() !== '') statements.push(current.trim())
      current = ''
      continue
    }

    current += char
  }

  if (current.trim() !== '') statements.push(current.trim())
  return statements
}

interface Step {
  sql: string
  /** What the statement is, without its text (which may hold a password). */
  label: string
}

export interface GlobalsPlan {
  apply: Step[]
  created: string[]
  existing: string[]
  altered: string[]
  granted: string[]
  skipped: string[]
}

export interface GlobalsPlanOptions {
  /** --alter-roles: existing roles take the globals' attributes, settings, comments and memberships too. */
  alterExisting?: boolean
  /** The role applying the plan: never altered, even with alterExisting. */
  currentRole?: string
}

// Each statement must match one of these shapes in full (not just its start): a crafted file cannot
// smuggle a second command into a statement dbb applies.
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`
const LITERAL = String.raw`(?:'(?:[^']|'')*')`
const SETTING_VALUE = String.raw`(?:${LITERAL}|[A-Za-z0-9_.+-]+)`
const SETTING = String.raw`(?:SET [A-Za-z_][A-Za-z0-9_.]* (?:TO|=) ${SETTING_VALUE}(?:, ${SETTING_VALUE})*|RESET (?:ALL|[A-Za-z_][A-Za-z0-9_.]*))`
const SESSION_SETTING = new RegExp(String.raw`^SET [a-z_]+ (?:=|TO) ${SETTING_VALUE}$`)
const CREATE_ROLE = new RegExp(String.raw`^CREATE ROLE (${IDENT})$`, 's')
const ROLE_STATEMENT = new RegExp(
  String.raw`^(?:ALTER ROLE (${IDENT}) WITH(?: [A-Z]+| CONNECTION LIMIT -?\d+| PASSWORD ${LITERAL}| VALID UNTIL ${LITERAL})+|ALTER ROLE (${IDENT}) ${SETTING}|COMMENT ON ROLE (${IDENT}) IS ${LITERAL}|SECURITY LABEL (?:FOR ${IDENT} )?ON ROLE (${IDENT}) IS (?:${LITERAL}|NULL))$`,
  's',
)
const ROLE_IN_DATABASE = new RegExp(String.raw`^ALTER ROLE (${IDENT}) IN DATABASE (${IDENT}) ${SETTING}$`, 's')
const GRANT_ROLE = new RegExp(String.raw`^GRANT (${IDENT}(?:, ${IDENT})*) TO (${IDENT})((?: WITH (?:ADMIN|INHERIT|SET) (?:OPTION|TRUE|FALSE))*)(?: GRANTED BY ${IDENT})?$`, 's')
const TABLESPACE = /^(?:CREATE|ALTER) TABLESPACE |^(?:GRANT|REVOKE) .* ON TABLESPACE |^COMMENT ON TABLESPACE /s

export function unquoteIdent(ident: string): string {
  return ident.startsWith('"') ? ident.slice(1, -1).replaceAll('""', '"') : ident.toLowerCase()
}

/** Pure: which statements to run against a server whose roles and databases are given. */
export function planGlobals(statements: string[], roles: Set<string>, databases: Set<string>, options: GlobalsPlanOptions = {}): GlobalsPlan {
  const plan: GlobalsPlan = {apply: [], created: [], existing: [], altered: [], granted: [], skipped: []}
  const created = new Set<string>()
  const exists = (role: string) => roles.has(role) || created.has(role)
  const alterable = (role: string) => options.alterExisting === true && roles.has(role) && role !== options.currentRole
  /** Roles this plan may change: the ones it creates, and with alterExisting the existing ones but the restoring role. */
  const changeable = (role: string) => created.has(role) || alterable(role)
  const noteAltered = (role: string) => {
    if (!created.has(role) && !plan.altered.includes(role)) plan.altered.push(role)
  }
  const memberships: string[] = []
  for (const statement of statements) {
    if (SESSION_SETTING.test(statement)) {
      plan.apply.push({sql: statement, label: 'a session setting'})
      continue
    }

    const create = CREATE_ROLE.exec(statement)
    if (create) {
      const role = unquoteIdent(create[1])
      if (roles.has(role)) {
        plan.existing.push(role)
        if (options.alterExisting && role === options.currentRole) plan.skipped.push(`role ${role}: it runs this restore, so --alter-roles leaves it unchanged`)
      } else if (!created.has(role)) {
        created.add(role)
        plan.created.push(role)
        plan.apply.push({sql: statement, label: `CREATE ROLE for ${role}`})
      }

      continue
    }

    const inDatabase = ROLE_IN_DATABASE.exec(statement)
    if (inDatabase) {
      const [role, database] = [unquoteIdent(inDatabase[1]), unquoteIdent(inDatabase[2])]
      if (!changeable(role)) continue
      if (databases.has(database)) {
        plan.apply.push({sql: statement, label: `a setting of role ${role} in database ${database}`})
        noteAltered(role)
      } else plan.skipped.push(`setting of role ${role} in database ${database}: that database does not exist yet (restore it, then run the ALTER ROLE … IN DATABASE line from the globals yourself)`)
      continue
    }

    const roleStatement = ROLE_STATEMENT.exec(statement)
    if (roleStatement) {
      const role = unquoteIdent(roleStatement[1] ?? roleStatement[2] ?? roleStatement[3] ?? roleStatement[4])
      // Existing roles are never altered (unless --alter-roles): their passwords, attributes, settings and comments stay as they are.
      if (changeable(role)) {
        plan.apply.push({sql: statement, label: `attributes of role ${role}`})
        noteAltered(role)
      }
      continue
    }

    const grant = GRANT_ROLE.exec(statement)
    if (grant) {
      memberships.push(statement)
      continue
    }

    if (TABLESPACE.test(statement)) {
      plan.skipped.push(`tablespace statement "${statement.split(/\s+/).slice(0, 3).join(' ')} …": not applied (create the tablespace's directory on this server, then run it from the globals yourself)`)
      continue
    }

    plan.skipped.push(`statement "${statement.split(/\s+/).slice(0, 2).join(' ')} …": not a role statement dbb applies`)
  }

  // After every CREATE ROLE, as pg_dumpall orders them too.
  for (const statement of memberships) {
    const grant = GRANT_ROLE.exec(statement) as RegExpExecArray
    const member = unquoteIdent(grant[2])
    const granted = grant[1].split(', ').map(unquoteIdent)
    if (!changeable(member)) {
      plan.skipped.push(`membership of existing role ${member} in ${granted.join(', ')}: not granted (an existing role is never changed without --alter-roles)`)
      continue
    }

    const absent = granted.filter((role) => !exists(role))
    if (absent.length > 0) {
      plan.skipped.push(`membership of ${member} in ${absent.join(', ')}: no such role`)
      continue
    }

    plan.apply.push({sql: `GRANT ${grant[1]} TO ${grant[2]}${grant[3] ?? ''}`, label: `membership of ${member} in ${granted.join(', ')}`})
    plan.granted.push(...granted.map((role) => `${role} → ${member}`))
    noteAltered(member)
  }

  return plan
}
