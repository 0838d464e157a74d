import {ClientBase, escapeIdentifier, escapeLiteral} from 'pg'

import {
  DatabasePrivilege,
  DatabaseProfile,
  SecurityDefinerFunction,
  captureDatabaseProfile,
  securityDefinerFunctions,
} from '../backup/database-profile'
import type {BackupMetadata} from '../backup/metadata'
import {OperationError, errorMessage} from '../errors'

/**
 * Restore-side half of the database's own properties (see src/backup/database-profile.ts) and
 * the escalation check. How a restore flow uses it:
 *
 *  1. Before the import: the profile to carry over is `readDatabaseProfile(client, target)` for an
 *     in-place restore (the old target is the truth), else the backup's `databaseProfile` sidecar
 *     field; `describeCarryOver(profile, source, existingRoles)` gives the plan's lines.
 *  2. After the import into the staging database, before the swap (never before the import: a
 *     profile may set `default_transaction_read_only` or a `statement_timeout`):
 *     - for a dump without privileges (`backup.privileges?.ownersAndPrivileges === false`):
 *       `reapplyFunctionPrivileges(stagingClient, backup.privileges.securityDefinerFunctions)`;
 *     - `findEscalations(stagingClient, backup.privileges?.securityDefinerFunctions)` — any result
 *       fails the restore (nothing swapped), with `describeEscalations(...)` as the message;
 *     - `applyDatabaseProfile(maintenanceClient, stagingName, profile)`, logging `skipped` as
 *       warnings. Everything it sets is keyed by the database's oid, so it survives
 *       `ALTER DATABASE staging RENAME TO target`.
 *     `finishStaging(...)` does these three in order.
 */

/** The database-level properties of the live database `dbname` (an in-place restore's old target); undefined when it does not exist. */
export async function readDatabaseProfile(client: ClientBase, dbname: string): Promise<DatabaseProfile | undefined> {
  return captureDatabaseProfile(client, dbname)
}

export interface ApplyOptions {
  /** The role that will own the database when the profile's owner does not exist on this server (default: leave the owner as created). */
  fallbackOwner?: string
  /** Leave the comment alone (the restore sets it in the swap transaction, see src/restore/logical.ts). */
  skipComment?: boolean
}

export interface ApplyReport {
  /** One line per property applied, e.g. `owner app_owner`, `ALTER DATABASE SET search_path=app, public`. */
  applied: string[]
  /** What could not be applied and why (a role missing on this server, a setting this server does not know). */
  skipped: {item: string; reason: string}[]
}

/**
 * Applies `profile` to the database `databaseName` (normally a freshly created staging database,
 * connected to through another database). Each property is one statement; one that fails (a role
 * that does not exist here, an unknown setting) is reported in `skipped` and the rest still
 * apply — the caller decides whether a skip is fatal. Settings already present on the database
 * and not in the profile are removed, so the result is the profile, not a merge.
 */
export async function applyDatabaseProfile(
  client: ClientBase,
  databaseName: string,
  profile: DatabaseProfile,
  options: ApplyOptions = {},
): Promise<ApplyReport> {
  const report: ApplyReport = {applied: [], skipped: []}
  const db = escapeIdentifier(databaseName)
  const roles = await existingRoles(client, rolesOf(profile))
  /** `quiet`: a clean-up step (RESET, comment removal) reported only when it fails. */
  const attempt = async (item: string, sql: string | (() => string), quiet = false) => {
    try {
      await client.query(typeof sql === 'string' ? sql : sql())
      if (!quiet) report.applied.push(item)
    } catch (error) {
      report.skipped.push({item, reason: errorMessage(error)})
    }
  }

  const missing = (role: string) => role !== '' && !roles.has(role)
  const skipMissing = (item: string, role: string) => report.skipped.push({item, reason: `role "${role}" does not exist on this server`})

  if (missing(profile.owner)) {
    skipMissing(`owner ${profile.owner}`, profile.owner)
    const fallback = options.fallbackOwner
    if (fallback) await attempt(`owner ${fallback} (instead of ${profile.owner})`, `ALTER DATABASE ${db} OWNER TO ${escapeIdentifier(fallback)}`)
  } else {
    await attempt(`owner ${profile.owner}`, `ALTER DATABASE ${db} OWNER TO ${escapeIdentifier(profile.owner)}`)
  }

  await applyAcl(client, databaseName, profile, roles, report)

  if (options.skipComment) {
    // The caller sets the comment itself (the restore swap: the staging database's comment is its leftover marker until then).
  } else if (profile.comment === null) {
    await attempt('no comment', `COMMENT ON DATABASE ${db} IS NULL`, true)
  } else {
    await attempt(`comment ${JSON.stringify(profile.comment)}`, `COMMENT ON DATABASE ${db} IS ${escapeLiteral(profile.comment)}`)
  }

  await attempt(`connection limit ${profile.connectionLimit}`, `ALTER DATABASE ${db} CONNECTION LIMIT ${Math.trunc(profile.connectionLimit)}`)

  await attempt('ALTER DATABASE RESET ALL', `ALTER DATABASE ${db} RESET ALL`, true)
  for (const setting of profile.settings) {
    // A function: a malformed entry (a hand-edited sidecar) is one skipped item, not a failed restore.
    await attempt(`ALTER DATABASE SET ${setting}`, () => `ALTER DATABASE ${db} SET ${settingClause(setting)}`)
  }

  for (const {role, settings} of profile.roleSettings) {
    if (missing(role)) {
      for (const setting of settings) skipMissing(`ALTER ROLE ${role} IN DATABASE SET ${setting}`, role)
      continue
    }

    await attempt(`ALTER ROLE ${role} IN DATABASE RESET ALL`, `ALTER ROLE ${escapeIdentifier(role)} IN DATABASE ${db} RESET ALL`, true)
    for (const setting of settings) {
      await attempt(`ALTER ROLE ${role} IN DATABASE SET ${setting}`, () => `ALTER ROLE ${escapeIdentifier(role)} IN DATABASE ${db} SET ${settingClause(setting)}`)
    }
  }

  return report
}

/**
 * Makes the database's ACL the profile's: grants what is missing, revokes what is extra, compared
 * on the effective ACL (a NULL ACL is the default: owner all, PUBLIC CONNECT and TEMPORARY).
 */
async function applyAcl(client: ClientBase, databaseName: string, profile: DatabaseProfile, roles: Set<string>, report: ApplyReport): Promise<void> {
  const {rows} = await client.query<{owner: string; acl: DatabasePrivilege[]}>(
    `SELECT pg_get_userbyid(d.datdba) AS owner,
            coalesce(json_agg(json_build_object(
              'grantee', CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END,
              'privilege', a.privilege_type, 'grantable', a.is_grantable)) FILTER (WHERE a.grantee IS NOT NULL), '[]'::json) AS acl
     FROM pg_database d LEFT JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a ON true
     WHERE d.datname = $1 GROUP BY d.datdba`,
    [databaseName],
  )
  if (!rows[0]) throw new Error(`database "${databaseName}" does not exist`)
  const current = rows[0].acl
  // When the profile's owner is missing here, its rights go to whoever owns the database now, not to nobody.
  const desired = effectiveAcl(profile).map((entry) => (entry.grantee === profile.owner ? {...entry, grantee: rows[0].owner} : entry))
  const key = (entry: DatabasePrivilege) => `${entry.grantee}\u0000${entry.privilege}\u0000${entry.grantable}`
  const desiredKeys = new Set(desired.map((entry) => key(entry)))
  const currentKeys = new Set(current.map((entry) => key(entry)))
  const db = escapeIdentifier(databaseName)
  const grantee = (name: string) => (name === '' ? 'PUBLIC' : escapeIdentifier(name))
  const label = (entry: DatabasePrivilege) => `${entry.privilege} to ${entry.grantee === '' ? 'PUBLIC' : entry.grantee}${entry.grantable ? ' WITH GRANT OPTION' : ''}`

  for (const entry of current) {
    if (desiredKeys.has(key(entry))) continue
    const sql = entry.grantable
      ? `REVOKE GRANT OPTION FOR ${entry.privilege} ON DATABASE ${db} FROM ${grantee(entry.grantee)} CASCADE`
      : `REVOKE ${entry.privilege} ON DATABASE ${db} FROM ${grantee(entry.grantee)} CASCADE`
    try {
      await client.query(sql)
      report.applied.push(`revoke ${label(entry)}`)
    } catch (error) {
      report.skipped.push({item: `revoke ${label(entry)}`, reason: errorMessage(error)})
    }
  }

  for (const entry of desired) {
    if (currentKeys.has(key(entry))) continue
    if (entry.grantee !== '' && entry.grantee !== rows[0].owner && !roles.has(entry.grantee)) {
      report.skipped.push({item: `grant ${label(entry)}`, reason: `role "${entry.grantee}" does not exist on this server`})
      continue
    }

    const sql = `GRANT ${entry.privilege} ON DATABASE ${db} TO ${grantee(entry.grantee)}${entry.grantable ? ' WITH GRANT OPTION' : ''}`
    try {
      await client.query(sql)
      report.applied.push(`grant ${label(entry)}`)
    } catch (error) {
      report.skipped.push({item: `grant ${label(entry)}`, reason: errorMessage(error)})
    }
  }
}

/** The ACL a profile means: its explicit entries, or PostgreSQL's default for a NULL ACL. */
export function effectiveAcl(profile: DatabaseProfile): DatabasePrivilege[] {
  if (profile.acl !== null) return profile.acl
  return [
    {grantee: '', privilege: 'TEMPORARY', grantable: false},
    {grantee: '', privilege: 'CONNECT', grantable: false},
    ...(['CREATE', 'TEMPORARY', 'CONNECT'] as const).map((privilege) => ({grantee: profile.owner, privilege, grantable: false})),
  ]
}

/** Every role a profile names (owner, grantees, per-role settings). */
export function rolesOf(profile: DatabaseProfile): string[] {
  const names = new Set([profile.owner, ...(profile.acl ?? []).map((entry) => entry.grantee), ...profile.roleSettings.map((entry) => entry.role)])
  names.delete('')
  return [...names]
}

async function existingRoles(client: ClientBase, names: string[]): Promise<Set<string>> {
  const {rows} = await client.query<{rolname: string}>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])', [names])
  return new Set(rows.map((row) => row.rolname))
}

/**
 * Settings whose value is a list of names (GUC_LIST_QUOTE in PostgreSQL): stored as `"$user", public`
 * and re-set element by element, as pg_dump's makeAlterConfigCommand does. Quoting such a value as one
 * literal would set a single schema named `"$user", public`.
 */
const LIST_SETTINGS = new Set([
  'local_preload_libraries',
  'search_path',
  'session_preload_libraries',
  'shared_preload_libraries',
  'temp_tablespaces',
  'unix_socket_directories',
])

/** `name=value` as pg_db_role_setting stores it → `name = <value>` for ALTER … SET. */
export function settingClause(entry: string): string {
  const at = entry.indexOf('=')
  if (at <= 0) throw new Error(`"${entry}" is not a name=value setting`)
  const name = entry.slice(0, at)
  const value = entry.slice(at + 1)
  const quotedName = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_$]*)?$/i.test(name) ? name : escapeIdentifier(name)
  if (!LIST_SETTINGS.has(name.toLowerCase())) return `${quotedName} = ${escapeLiteral(value)}`
  const elements = splitSettingList(value)
  return `${quotedName} = ${elements.length === 0 ? "''" : elements.map((element) => escapeLiteral(element)).join(', ')}`
}

/** PostgreSQL's SplitGUCList: comma-separated, elements optionally double-quoted ("" inside is a quote). */
export function splitSettingList(value: string): string[] {
  const elements: string[] = []
  let index = 0
  const skipSpace = () => {
    while (index < value.length && /\s/.test(value[index])) index++
  }

  skipSpace()
  if (index >= value.length) return elements
  for (;;) {
    let element = ''
    if (value[index] === '"') {
      index++
      for (;;) {
        if (index >= value.length) throw new Error(`unterminated quote in setting list ${JSON.stringify(value)}`)
        if (value[index] === '"') {
          if (value[index + 1] === '"') {
            element += '"'
            index += 2
            continue
          }

          index++
          break
        }

        element += value[index++]
      }
    } else {
      while (index < value.length && value[index] !== ',' && !/\s/.test(value[index])) element += value[index++]
    }

    elements.push(element)
    skipSpace()
    if (index >= value.length) return elements
    if (value[index] !== ',') throw new Error(`malformed setting list ${JSON.stringify(value)}`)
    index++
    skipSpace()
  }
}

export type ProfileSource = 'old-target' | 'backup'

export interface CarryOver {
  /** Where the properties come from, for the plan's heading: "will carry over (from the backup): …". */
  from: 'the current database' | 'the backup'
  /** "will carry over: …" lines for the restore plan. */
  willCarryOver: string[]
  /** "will not carry over: …" lines, each with the reason. */
  willNotCarryOver: string[]
}

/**
 * What the plan says before the countdown. `source` names where the profile comes from (the old
 * target for an in-place restore, the backup's sidecar otherwise); `existingRoles`, when given,
 * is the set of roles on the target server, so properties naming a missing role are listed as
 * not carried over rather than promised.
 */
export function describeCarryOver(profile: DatabaseProfile | undefined, source: ProfileSource, existingRoles?: ReadonlySet<string>): CarryOver {
  const from = source === 'old-target' ? 'the current database' : 'the backup'
  if (!profile) {
    return {
      from,
      willCarryOver: [],
      willNotCarryOver: [
        source === 'backup'
          ? 'database properties (owner, ACL, comment, settings): this backup predates their recording; the new database gets defaults, owned by the restoring user'
          : 'database properties: the old target could not be read',
      ],
    }
  }

  const present = (role: string) => role === '' || !existingRoles || existingRoles.has(role)
  const carry: string[] = []
  const not: string[] = []
  const missingRole = (what: string, role: string) => not.push(`${what} (role ${role} does not exist on this server)`)

  if (present(profile.owner)) carry.push(`owner ${profile.owner}`)
  else missingRole(`owner ${profile.owner}`, profile.owner)

  if (profile.acl === null) {
    carry.push('default privileges (PUBLIC may connect)')
  } else {
    const publicPrivileges = profile.acl.filter((entry) => entry.grantee === '').map((entry) => entry.privilege)
    const revoked = (['CONNECT', 'TEMPORARY'] as const).filter((privilege) => !publicPrivileges.includes(privilege))
    if (revoked.length > 0) carry.push(`${revoked.join(' and ')} revoked from PUBLIC`)
    const grants = new Map<string, string[]>()
    for (const entry of profile.acl) {
      if (entry.grantee === '' || entry.grantee === profile.owner) continue
      grants.set(entry.grantee, [...(grants.get(entry.grantee) ?? []), entry.privilege + (entry.grantable ? '*' : '')])
    }

    for (const [role, privileges] of grants) {
      if (present(role)) carry.push(`GRANT ${privileges.join(', ')} to ${role}`)
      else missingRole(`GRANT ${privileges.join(', ')} to ${role}`, role)
    }
  }

  if (profile.comment !== null) carry.push(`comment ${JSON.stringify(profile.comment)}`)
  if (profile.connectionLimit !== -1) carry.push(`connection limit ${profile.connectionLimit}`)
  for (const setting of profile.settings) carry.push(setting)
  for (const {role, settings} of profile.roleSettings) {
    for (const setting of settings) {
      if (present(role)) carry.push(`${setting} for role ${role}`)
      else missingRole(`${setting} for role ${role}`, role)
    }
  }

  not.push(
    `encoding/locale ${profile.encoding}, ${profile.collate}/${profile.ctype}${profile.localeProvider ? ` (${profile.localeProvider})` : ''}: the new database gets the server's, set when it is created`,
  )
  return {from, willCarryOver: carry, willNotCarryOver: not}
}

/** A SECURITY DEFINER function the restore made more powerful or more widely callable than in the source. */
export interface Escalation {
  signature: string
  owner: string
  publicExecute: boolean
  /** Why it is refused, in words. */
  reason: string
  /** How it was in the source database, when the backup recorded it. */
  recorded?: SecurityDefinerFunction
}

/**
 * Run against the restored (staging) database before the swap. A SECURITY DEFINER function runs
 * with its owner's rights, so a restore escalates when it
 *  - lets PUBLIC call a function that PUBLIC could not call in the source, or
 *  - makes a function superuser-owned that was not (its callers now run it as superuser);
 * and, for a function the backup did not record (or a backup from before dbb recorded them),
 * when it is superuser-owned and PUBLIC may call it. Any result must fail the restore.
 * `client` must not be inside a transaction (see securityDefinerFunctions).
 */
export async function findEscalations(client: ClientBase, recorded?: readonly SecurityDefinerFunction[]): Promise<Escalation[]> {
  const found = await securityDefinerFunctions(client)
  const before = new Map((recorded ?? []).map((fn) => [fn.signature, fn]))
  const escalations: Escalation[] = []
  for (const fn of found) {
    const source = before.get(fn.signature)
    const reasons: string[] = []
    if (source) {
      if (fn.publicExecute && !source.publicExecute) reasons.push('PUBLIC may execute it, which it could not before')
      if (fn.ownerIsSuperuser && !source.ownerIsSuperuser) reasons.push(`it is owned by superuser ${fn.owner} instead of ${source.owner}`)
    } else if (fn.ownerIsSuperuser && fn.publicExecute) {
      reasons.push(`it is owned by superuser ${fn.owner} and PUBLIC may execute it`)
    }

    if (reasons.length > 0) {
      escalations.push({signature: fn.signature, owner: fn.owner, publicExecute: fn.publicExecute, reason: reasons.join('; '), ...(source ? {recorded: source} : {})})
    }
  }

  return escalations
}

/** One message for a failed escalation check: what, how it was, and how to restore safely. */
export function describeEscalations(escalations: readonly Escalation[]): string {
  const lines = escalations.map((escalation) => {
    const was = escalation.recorded
      ? ` (in the backup: owned by ${escalation.recorded.owner}, executable by ${escalation.recorded.publicExecute ? 'PUBLIC' : escalation.recorded.executeGrantees.join(', ') || 'its owner only'})`
      : ''
    return `  ${escalation.signature}: ${escalation.reason}${was}`
  })
  return [
    `refusing to swap in a database where ${escalations.length} SECURITY DEFINER function(s) would give roles rights they did not have:`,
    ...lines,
    'restore as the owning role (--owner ROLE), or take backups with owners and privileges (the default; BACKUP_NO_OWNER unset)',
  ].join('\n')
}

/**
 * For a dump without privileges (BACKUP_NO_OWNER): puts back the EXECUTE grants the backup
 * recorded for its SECURITY DEFINER functions — REVOKE from PUBLIC where PUBLIC could not call
 * it, GRANT to each recorded grantee that exists here — so that a restore with `--owner` gives
 * the same callers as the source. Run after the import, before findEscalations. Functions not in
 * the restored database and grantees missing here are reported in `skipped`.
 */
export async function reapplyFunctionPrivileges(client: ClientBase, recorded: readonly SecurityDefinerFunction[]): Promise<ApplyReport> {
  const report: ApplyReport = {applied: [], skipped: []}
  const present = new Map((await securityDefinerFunctions(client)).map((fn) => [fn.signature, fn]))
  const grantees = await existingRoles(client, [...new Set(recorded.flatMap((fn) => fn.executeGrantees))])
  for (const fn of recorded) {
    const now = present.get(fn.signature)
    if (!now) {
      report.skipped.push({item: `EXECUTE on ${fn.signature}`, reason: 'no such SECURITY DEFINER function in the restored database'})
      continue
    }

    // Interpolated only because it equals a signature this server just printed (regprocedure with
    // search_path = pg_catalog): the sidecar's text never reaches SQL unless the server produced it.
    const target = `FUNCTION ${fn.signature}`
    const run = async (item: string, sql: string) => {
      try {
        await client.query('BEGIN')
        await client.query("SET LOCAL search_path = 'pg_catalog'")
        await client.query(sql)
        await client.query('COMMIT')
        report.applied.push(item)
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {})
        report.skipped.push({item, reason: errorMessage(error)})
      }
    }

    if (!fn.publicExecute && now.publicExecute) await run(`revoke EXECUTE on ${fn.signature} from PUBLIC`, `REVOKE EXECUTE ON ${target} FROM PUBLIC`)
    for (const grantee of fn.executeGrantees) {
      if (grantee === now.owner || now.executeGrantees.includes(grantee)) continue
      if (!grantees.has(grantee)) {
        report.skipped.push({item: `grant EXECUTE on ${fn.signature} to ${grantee}`, reason: `role "${grantee}" does not exist on this server`})
        continue
      }

      await run(`grant EXECUTE on ${fn.signature} to ${grantee}`, `GRANT EXECUTE ON ${target} TO ${escapeIdentifier(grantee)}`)
    }
  }

  return report
}

export interface FinishStagingInput {
  /** Connected to the staging database (for the function checks); not inside a transaction. */
  stagingClient: ClientBase
  /** Connected to another database of the same server (ALTER DATABASE on the staging one). */
  maintenanceClient: ClientBase
  stagingName: string
  backup: BackupMetadata
  /** What to carry over (planRestoreFidelity's `profile`); undefined: nothing to apply. */
  profile?: DatabaseProfile
  applyOptions?: ApplyOptions
}

export interface FinishStagingReport {
  functionPrivileges?: ApplyReport
  profile?: ApplyReport
}

/**
 * The post-import, pre-swap step in one call: recorded EXECUTE grants back (no-owner dumps),
 * the escalation check — which throws an OperationError naming each function, so the caller
 * swaps nothing — then the database profile. The caller logs the reports' `skipped` as warnings.
 */
export async function finishStaging(input: FinishStagingInput): Promise<FinishStagingReport> {
  const {stagingClient, backup} = input
  const recorded = backup.privileges?.securityDefinerFunctions
  const report: FinishStagingReport = {}
  if (backup.privileges && !backup.privileges.ownersAndPrivileges && recorded) {
    report.functionPrivileges = await reapplyFunctionPrivileges(stagingClient, recorded)
  }

  const escalations = await findEscalations(stagingClient, recorded)
  if (escalations.length > 0) throw new OperationError(describeEscalations(escalations))
  if (input.profile) report.profile = await applyDatabaseProfile(input.maintenanceClient, input.stagingName, input.profile, input.applyOptions)
  return report
}
