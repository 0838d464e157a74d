import type {ClientBase} from 'pg'

import type {BackupMetadata} from '../backup/metadata'
import {formatBytes} from '../format'
import type {DatabaseProfile} from '../backup/database-profile'
import {CarryOver, ProfileSource, describeCarryOver, readDatabaseProfile, rolesOf} from './fidelity'

/**
 * Checks a logical restore can finish, made before a byte of the dump is streamed: each problem
 * found here would otherwise surface minutes or hours into the import (or inside the swap).
 * `problems` refuse the restore; `warnings` go into the plan. Each carries a stable `code`, one
 * sentence saying what is wrong and a `fix`.
 */

export type PreflightCode =
  | 'CREATEDB_REQUIRED'
  | 'NOT_TARGET_OWNER'
  | 'CANNOT_TERMINATE_SESSIONS'
  | 'SERVER_OLDER_THAN_DUMP'
  | 'PSQL_TOO_OLD'
  | 'MISSING_ROLES'
  | 'ROLES_NOT_RECORDED'
  | 'PROFILE_ROLES_MISSING'
  | 'SECURITY_DEFINER_AS_SUPERUSER'
  | 'OWNER_ROLE_MISSING'
  | 'OWNER_ROLE_NOT_HELD'
  | 'OWNER_ROLE_WITH_OWNERS'
  | 'DISK_SPACE_HINT'

export interface PreflightFinding {
  code: PreflightCode
  message: string
  fix?: string
}

export interface PreflightResult {
  ok: boolean
  problems: PreflightFinding[]
  warnings: PreflightFinding[]
  /** What was found, for the plan and --json. */
  facts: {
    user: string
    superuser: boolean
    serverVersion: string
    targetExists: boolean
    targetOwner?: string
    targetSizeBytes?: number
    /** Roles the dump needs that this server lacks. */
    missingRoles: string[]
  }
}

export interface PreflightInput {
  backup: BackupMetadata
  targetDatabase: string
  /** The local psql's version (toolVersion('psql')), checked against the dump's needs. */
  psqlVersion?: string
  /** `--owner ROLE`: the import runs as this role (SET ROLE), so objects of a no-owner dump belong to it. */
  ownerRole?: string
}

/** `client` is connected, as the restoring user, to any database of the target server except the target itself. */
export async function preflight(client: ClientBase, input: PreflightInput): Promise<PreflightResult> {
  const {backup, targetDatabase} = input
  const problems: PreflightFinding[] = []
  const warnings: PreflightFinding[] = []

  const me = (
    await client.query<{user: string; superuser: boolean; createdb: boolean; signal_backend: boolean; server_version: string}>(
      `SELECT current_user AS user, r.rolsuper AS superuser, r.rolcreatedb AS createdb,
              pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') AS signal_backend,
              current_setting('server_version') AS server_version
       FROM pg_roles r WHERE r.rolname = current_user`,
    )
  ).rows[0]
  const serverVersion = me.server_version.split(' ')[0]

  const target = (
    await client.query<{owner: string; may_own: boolean; size: string | null; other_sessions: number; superuser_sessions: number}>(
      `SELECT pg_get_userbyid(d.datdba) AS owner,
              pg_has_role(current_user, d.datdba, 'USAGE') AS may_own,
              CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid)::text END AS size,
              (SELECT count(*)::int FROM pg_stat_activity a WHERE a.datid = d.oid AND a.usename IS DISTINCT FROM current_user) AS other_sessions,
              (SELECT count(*)::int FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
                 WHERE a.datid = d.oid AND r.rolsuper AND a.pid <> pg_backend_pid()) AS superuser_sessions
       FROM pg_database d WHERE d.datname = $1`,
      [targetDatabase],
    )
  ).rows[0]

  if (!me.superuser && !me.createdb) {
    problems.push({
      code: 'CREATEDB_REQUIRED',
      message: `${me.user} may not create databases: the restore imports into a new database first`,
      fix: `as a superuser: ALTER ROLE ${quoteRole(me.user)} CREATEDB`,
    })
  }

  if (target && !me.superuser) {
    if (!target.may_own) {
      problems.push({
        code: 'NOT_TARGET_OWNER',
        message: `database "${targetDatabase}" is owned by ${target.owner}; ${me.user} can neither rename nor drop it`,
        fix: `restore as ${target.owner} or a superuser, or GRANT ${quoteRole(target.owner)} TO ${quoteRole(me.user)}`,
      })
    }

    if (!me.signal_backend) {
      const finding = {
        code: 'CANNOT_TERMINATE_SESSIONS' as const,
        message: `${me.user} can terminate only its own sessions on "${targetDatabase}" (${target.other_sessions} of other roles connected now); the swap needs the database to itself`,
        fix: `GRANT pg_signal_backend TO ${quoteRole(me.user)}, or stop the other clients before restoring`,
      }
      if (target.other_sessions > 0) problems.push(finding)
      else warnings.push(finding)
    } else if (target.superuser_sessions > 0) {
      problems.push({
        code: 'CANNOT_TERMINATE_SESSIONS',
        message: `${target.superuser_sessions} superuser session(s) are connected to "${targetDatabase}"; only a superuser can terminate them`,
        fix: 'disconnect them, or restore as a superuser',
      })
    }
  }

  checkVersions(backup, serverVersion, input.psqlVersion, problems, warnings)

  const privileges = backup.privileges
  const wanted = new Set<string>([...(privileges?.referencedRoles ?? []), ...(input.ownerRole ? [input.ownerRole] : [])])
  const profileRoles = backup.databaseProfile ? rolesOf(backup.databaseProfile) : []
  const existing = await existingRoleSet(client, [...wanted, ...profileRoles, ...(target ? [target.owner] : [])])
  const missingRoles = [...wanted].filter((role) => !existing.has(role)).sort()
  if (input.ownerRole && !existing.has(input.ownerRole)) {
    problems.push({code: 'OWNER_ROLE_MISSING', message: `--owner ${input.ownerRole}: no such role on this server`, fix: `CREATE ROLE ${quoteRole(input.ownerRole)}, or name an existing role`})
  } else if (input.ownerRole && !me.superuser && !(await holdsRole(client, input.ownerRole))) {
    // The import runs as that role and the new database is created owned by it, then renamed: all need its privileges.
    problems.push({
      code: 'OWNER_ROLE_NOT_HELD',
      message: `--owner ${input.ownerRole}: ${me.user} is not a member of it (with INHERIT), so it can neither create objects as it nor rename its database`,
      fix: `GRANT ${quoteRole(input.ownerRole)} TO ${quoteRole(me.user)}`,
    })
  }

  const dumpMissing = missingRoles.filter((role) => role !== input.ownerRole)
  if (dumpMissing.length > 0) {
    problems.push({
      code: 'MISSING_ROLES',
      message: `the dump names role(s) this server does not have: ${dumpMissing.join(', ')} (the import would stop at the first)`,
      fix:
        'create them first (e.g. from `pg_dumpall --globals-only` of the source server); for servers whose roles differ, take backups with BACKUP_NO_OWNER=true and restore with --owner ROLE',
    })
  }

  if (!privileges) {
    warnings.push({
      code: 'ROLES_NOT_RECORDED',
      message: `${backup.id} predates dbb's recording of roles and SECURITY DEFINER functions: missing roles surface only during the import`,
    })
  }

  const profileMissing = profileRoles.filter((role) => !existing.has(role))
  if (profileMissing.length > 0) {
    warnings.push({
      code: 'PROFILE_ROLES_MISSING',
      message: `database properties naming role(s) ${profileMissing.join(', ')} will not carry over: no such role on this server`,
      fix: 'create the roles before restoring to keep them',
    })
  }

  const ownerIsSuperuser = await roleIsSuperuser(client, input.ownerRole)
  checkSecurityDefiners(input, me.superuser, ownerIsSuperuser, problems)
  if (input.ownerRole && ownerIsSuperuser === false && privileges?.ownersAndPrivileges) {
    const notMember = await rolesNotHeldBy(client, input.ownerRole, privileges.referencedRoles.filter((role) => existing.has(role)))
    if (notMember.length > 0) {
      warnings.push({
        code: 'OWNER_ROLE_WITH_OWNERS',
        message: `the dump sets owners itself (ALTER … OWNER TO); run as ${input.ownerRole}, each needs membership in the new owner, and ${input.ownerRole} is not a member of ${notMember.join(', ')}`,
        fix: 'restore this dump without --owner (owners come from the dump), or grant the memberships',
      })
    }
  }

  const sourceSize = backup.databaseProfile?.sizeBytes
  const needed = sourceSize ?? backup.uncompressedBytes
  if (needed !== undefined) {
    const old = target?.size ? Number(target.size) : undefined
    warnings.push({
      code: 'DISK_SPACE_HINT',
      message:
        `the restored database needs about ${formatBytes(needed)} on the server` +
        (sourceSize === undefined ? ' (the SQL size; indexes can add more)' : ' (the source database\'s size when backed up)') +
        (old === undefined ? '' : `, next to the current "${targetDatabase}" (${formatBytes(old)}) until the swap`),
    })
  }

  return {
    ok: problems.length === 0,
    problems,
    warnings,
    facts: {
      user: me.user,
      superuser: me.superuser,
      serverVersion,
      targetExists: Boolean(target),
      ...(target ? {targetOwner: target.owner, ...(target.size ? {targetSizeBytes: Number(target.size)} : {})} : {}),
      missingRoles,
    },
  }
}

function checkVersions(backup: BackupMetadata, serverVersion: string, psqlVersion: string | undefined, problems: PreflightFinding[], warnings: PreflightFinding[]) {
  const dumpVersion = backup.pgDumpVersion ?? backup.pgVersion
  const dumpMajor = majorOf(dumpVersion)
  const serverMajor = majorOf(serverVersion)
  if (dumpMajor !== undefined && serverMajor !== undefined && serverMajor < dumpMajor) {
    warnings.push({
      code: 'SERVER_OLDER_THAN_DUMP',
      message: `the dump was written by pg_dump ${dumpVersion} for PostgreSQL ${backup.pgVersion}; this server is ${serverVersion}: restoring into an older major version may fail on newer syntax`,
      fix: 'restore into a server of the same or a newer major version',
    })
  }

  if (psqlVersion && dumpVersion && writesRestrict(dumpVersion) && !writesRestrict(psqlVersion)) {
    problems.push({
      code: 'PSQL_TOO_OLD',
      message: `the dump was written by pg_dump ${dumpVersion}, which emits \\restrict; the local psql ${psqlVersion} does not know it and would stop at the first line`,
      fix: 'install a current PostgreSQL client (psql 13.22, 14.19, 15.14, 16.10, 17.6 or newer)',
    })
  }
}

/**
 * A no-owner dump restored by a superuser creates every function superuser-owned and, without its
 * GRANT/REVOKE, executable by PUBLIC: a SECURITY DEFINER function then runs anyone's SQL as
 * superuser. Refused here unless the source had it exactly that way or the import runs as a
 * non-superuser role (--owner). findEscalations checks the result again before the swap.
 */
function checkSecurityDefiners(input: PreflightInput, userIsSuperuser: boolean, ownerIsSuperuser: boolean | undefined, problems: PreflightFinding[]) {
  const privileges = input.backup.privileges
  if (!privileges || privileges.ownersAndPrivileges) return
  const importAsSuperuser = input.ownerRole ? ownerIsSuperuser === true : userIsSuperuser
  if (!importAsSuperuser) return
  const escalating = privileges.securityDefinerFunctions.filter((fn) => !(fn.ownerIsSuperuser && fn.publicExecute))
  if (escalating.length === 0) return
  const owners = [...new Set(escalating.map((fn) => fn.owner))]
  problems.push({
    code: 'SECURITY_DEFINER_AS_SUPERUSER',
    message:
      `!!! ${input.backup.id} was dumped without owners and privileges and has ${escalating.length} SECURITY DEFINER function(s) ` +
      `(${escalating.map((fn) => fn.signature).join(', ')}); restored as a superuser they would run anyone's SQL as superuser`,
    fix: `restore with --owner ${owners.length === 1 ? owners[0] : 'ROLE'} (a non-superuser role that owned them), or back up without BACKUP_NO_OWNER`,
  })
}

/** pg_dump releases since 2025-08 (17.6, 16.10, 15.14, 14.19, 13.22, 18+) write `\restrict`, and psql from then on reads it. */
export function writesRestrict(version: string): boolean {
  const [major, minor = 0] = version.split('.').map(Number)
  if (!Number.isFinite(major)) return false
  if (major >= 18) return true
  const firstMinor: Record<number, number> = {17: 6, 16: 10, 15: 14, 14: 19, 13: 22}
  return firstMinor[major] !== undefined && minor >= firstMinor[major]
}

function majorOf(version: string | undefined): number | undefined {
  const major = Number(version?.split('.')[0])
  return Number.isFinite(major) && major > 0 ? major : undefined
}

async function existingRoleSet(client: ClientBase, names: string[]): Promise<Set<string>> {
  const {rows} = await client.query<{rolname: string}>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])', [names])
  return new Set(rows.map((row) => row.rolname))
}

async function rolesNotHeldBy(client: ClientBase, member: string, roles: string[]): Promise<string[]> {
  const {rows} = await client.query<{rolname: string}>(
    `SELECT r.rolname FROM pg_roles r WHERE r.rolname = ANY($2::text[]) AND NOT pg_has_role($1::name, r.oid, 'MEMBER') ORDER BY 1`,
    [member, roles],
  )
  return rows.map((row) => row.rolname)
}

async function holdsRole(client: ClientBase, role: string): Promise<boolean> {
  const {rows} = await client.query<{held: boolean}>(`SELECT pg_has_role(current_user, $1, 'USAGE') AS held`, [role])
  return rows[0]?.held === true
}

async function roleIsSuperuser(client: ClientBase, role: string | undefined): Promise<boolean | undefined> {
  if (!role) return undefined
  const {rows} = await client.query<{rolsuper: boolean}>('SELECT rolsuper FROM pg_roles WHERE rolname = $1', [role])
  return rows[0]?.rolsuper
}

function quoteRole(role: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(role) ? role : `"${role.replaceAll('"', '""')}"`
}

export interface RestoreFidelityPlan {
  preflight: PreflightResult
  /** The properties to carry over: the old target's for an in-place restore, else the backup's. */
  profile?: DatabaseProfile
  profileSource: ProfileSource
  carryOver: CarryOver
}

/**
 * Everything the plan needs before the countdown, through one connection (see preflight for
 * `client`): the checks, the profile to carry over and its "will / will not carry over" lines.
 */
export async function planRestoreFidelity(client: ClientBase, input: PreflightInput): Promise<RestoreFidelityPlan> {
  const result = await preflight(client, input)
  const oldTarget = result.facts.targetExists ? await readDatabaseProfile(client, input.targetDatabase) : undefined
  const profileSource: ProfileSource = oldTarget ? 'old-target' : 'backup'
  const profile = oldTarget ?? input.backup.databaseProfile
  const roles = profile ? await existingRoleSet(client, rolesOf(profile)) : new Set<string>()
  return {preflight: result, profile, profileSource, carryOver: describeCarryOver(profile, profileSource, roles)}
}
