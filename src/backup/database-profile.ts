import type {ClientBase} from 'pg'
import {z} from 'zod'

/**
 * What `pg_dump DBNAME` leaves out because it belongs to the database object itself, not to its
 * contents: owner, ACL (`REVOKE CONNECT … FROM PUBLIC`), comment, `ALTER DATABASE … SET`,
 * `ALTER ROLE … IN DATABASE … SET`, connection limit. A plain dump without `--create` carries none
 * of it, so a restore into a freshly created database would silently lose it: dbb records it at
 * backup time (the sidecar's `databaseProfile`) and reads it from the old target before an
 * in-place restore, and src/restore/fidelity.ts applies it to the new database before the swap.
 *
 * Everything here comes from shared catalogs (pg_database, pg_db_role_setting, pg_shdescription),
 * so any connection to the server can read the profile of any database.
 */

/** One privilege of a database ACL; grantee '' is PUBLIC. The grantor is not kept: it is always the owner for GRANTs we replay. */
export const databasePrivilegeSchema = z.object({
  grantee: z.string(),
  privilege: z.enum(['CONNECT', 'CREATE', 'TEMPORARY']),
  grantable: z.boolean(),
})
export type DatabasePrivilege = z.infer<typeof databasePrivilegeSchema>

export const databaseProfileSchema = z.looseObject({
  owner: z.string(),
  /** null: the default ACL (owner all, PUBLIC CONNECT and TEMPORARY). */
  acl: z.array(databasePrivilegeSchema).nullable(),
  comment: z.string().nullable(),
  /** `ALTER DATABASE … SET` entries as PostgreSQL stores them: `name=value`. */
  settings: z.array(z.string()),
  /** `ALTER ROLE role IN DATABASE … SET` entries, per role. */
  roleSettings: z.array(z.object({role: z.string(), settings: z.array(z.string())})),
  /** -1: no limit. */
  connectionLimit: z.number().int(),
  /** For information (a restored database gets the server's/template's; CREATE DATABASE decides them). */
  encoding: z.string(),
  collate: z.string(),
  ctype: z.string(),
  localeProvider: z.string().optional(),
  sizeBytes: z.number().int().nonnegative().optional(),
})
export type DatabaseProfile = z.infer<typeof databaseProfileSchema>

/** A SECURITY DEFINER function as it was in the source database: who owned it, who could call it. */
export const securityDefinerFunctionSchema = z.object({
  /** `schema.name(argtypes)` as regprocedure prints it. */
  signature: z.string(),
  owner: z.string(),
  ownerIsSuperuser: z.boolean(),
  publicExecute: z.boolean(),
  /** Roles (other than PUBLIC) holding EXECUTE. */
  executeGrantees: z.array(z.string()),
})
export type SecurityDefinerFunction = z.infer<typeof securityDefinerFunctionSchema>

/**
 * What a dump says about roles, recorded at backup time so a restore can check before streaming:
 * whether the dump carries owners and grants (dbb's default) or not (BACKUP_NO_OWNER), the roles
 * the dump names (a restore fails at the first one missing on the target), and the SECURITY
 * DEFINER functions with their owner and EXECUTE grants in the source database.
 */
export const dumpPrivilegesSchema = z.looseObject({
  /** true: `pg_dump` without --no-owner/--no-privileges; the dump sets owners and replays GRANT/REVOKE. */
  ownersAndPrivileges: z.boolean(),
  referencedRoles: z.array(z.string()),
  securityDefinerFunctions: z.array(securityDefinerFunctionSchema),
})
export type DumpPrivileges = z.infer<typeof dumpPrivilegesSchema>

const PROFILE_SQL = `
SELECT d.oid,
       pg_get_userbyid(d.datdba) AS owner,
       CASE WHEN d.datacl IS NULL THEN NULL ELSE (
         SELECT coalesce(json_agg(json_build_object(
                  'grantee', CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END,
                  'privilege', a.privilege_type,
                  'grantable', a.is_grantable)
                ORDER BY a.grantee, a.privilege_type), '[]'::json)
         FROM aclexplode(d.datacl) a) END AS acl,
       shobj_description(d.oid, 'pg_database') AS comment,
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') AS settings,
       coalesce((SELECT json_agg(json_build_object('role', pg_get_userbyid(s.setrole), 'settings', s.setconfig) ORDER BY pg_get_userbyid(s.setrole))
                 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0), '[]'::json) AS role_settings,
       d.datconnlimit AS connection_limit,
       pg_encoding_to_char(d.encoding) AS encoding,
       d.datcollate AS collate,
       d.datctype AS ctype,
       to_jsonb(d) ->> 'datlocprovider' AS locale_provider,
       -- pg_database_size needs CONNECT (or pg_read_all_stats); a size hint is not worth an error.
       CASE WHEN has_database_privilege(d.oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'MEMBER')
            THEN pg_database_size(d.oid)::text END AS size
FROM pg_database d
WHERE d.datname = $1`

interface ProfileRow {
  owner: string
  acl: DatabasePrivilege[] | null
  comment: string | null
  settings: string[]
  role_settings: {role: string; settings: string[]}[]
  connection_limit: number
  encoding: string
  collate: string
  ctype: string
  locale_provider: string | null
  size: string | null
}

/** The database-level properties of `dbname`, or undefined when there is no such database. */
export async function captureDatabaseProfile(client: ClientBase, dbname: string): Promise<DatabaseProfile | undefined> {
  const {rows} = await client.query<ProfileRow>(PROFILE_SQL, [dbname])
  const row = rows[0]
  if (!row) return undefined
  return {
    owner: row.owner,
    acl: row.acl,
    comment: row.comment,
    settings: row.settings,
    roleSettings: row.role_settings,
    connectionLimit: row.connection_limit,
    encoding: row.encoding,
    collate: row.collate,
    ctype: row.ctype,
    ...(row.locale_provider ? {localeProvider: localeProviderName(row.locale_provider)} : {}),
    ...(row.size === null ? {} : {sizeBytes: Number(row.size)}),
  }
}

function localeProviderName(code: string): string {
  return ({c: 'libc', i: 'icu', b: 'builtin'} as Record<string, string>)[code] ?? code
}

/**
 * Roles a dump of the connected database names. pg_shdepend records, per object of this database,
 * its owner ('o'), ACL grantees ('a') and policy roles ('r') — except pinned roles (the bootstrap
 * superuser, pg_database_owner), so owners of schemas, relations, functions and types are added
 * from their catalogs. A dump without owners and privileges still names policy roles
 * (`CREATE POLICY … TO role`).
 */
const REFERENCED_ROLES_SQL = `
WITH deps AS (
  SELECT sd.refobjid AS role, sd.deptype
  FROM pg_shdepend sd
  WHERE sd.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND sd.refclassid = 'pg_authid'::regclass
    AND sd.deptype IN ('o', 'a', 'r')
  UNION
  SELECT nspowner, 'o' FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
  UNION
  SELECT c.relowner, 'o' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  UNION
  SELECT p.proowner, 'o' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  UNION
  SELECT t.typowner, 'o' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
)
SELECT DISTINCT r.rolname
FROM deps JOIN pg_roles r ON r.oid = deps.role
WHERE $1 OR deps.deptype = 'r'
ORDER BY 1`

/**
 * SECURITY DEFINER functions outside the system schemas and not part of an extension (an
 * extension's own functions are created by CREATE EXTENSION, not by the dump).
 */
const SECURITY_DEFINER_SQL = `
SELECT p.oid::regprocedure::text AS signature,
       r.rolname AS owner,
       r.rolsuper AS owner_is_superuser,
       (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')) AS public_execute,
       coalesce((SELECT array_agg(DISTINCT pg_get_userbyid(a.grantee)::text ORDER BY pg_get_userbyid(a.grantee)::text)
                 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 WHERE a.grantee <> 0 AND a.privilege_type = 'EXECUTE')::text[], '{}') AS execute_grantees
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_roles r ON r.oid = p.proowner
WHERE p.prosecdef
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid AND dep.deptype = 'e')
ORDER BY 1`

interface SecurityDefinerRow {
  signature: string
  owner: string
  owner_is_superuser: boolean
  public_execute: boolean
  execute_grantees: string[]
}

/**
 * Signatures and type names print relative to search_path (an `ALTER DATABASE … SET search_path
 * = app` turns `app.credit(integer)` into `credit(integer)`): read with search_path = pg_catalog
 * only, so a backup and a restore name every function the same way, schema-qualified. Runs its
 * own short transaction: `client` must not be inside one.
 */
export async function securityDefinerFunctions(client: ClientBase): Promise<SecurityDefinerFunction[]> {
  await client.query('BEGIN')
  let rows: SecurityDefinerRow[]
  try {
    await client.query("SET LOCAL search_path = 'pg_catalog'")
    rows = (await client.query<SecurityDefinerRow>(SECURITY_DEFINER_SQL)).rows
  } finally {
    await client.query('COMMIT')
  }

  return rows.map((row) => ({
    signature: row.signature,
    owner: row.owner,
    ownerIsSuperuser: row.owner_is_superuser,
    publicExecute: row.public_execute,
    executeGrantees: row.execute_grantees,
  }))
}

/** The role facts of the database `client` is connected to, for a dump made with or without owners and privileges. */
export async function captureDumpPrivileges(client: ClientBase, ownersAndPrivileges: boolean): Promise<DumpPrivileges> {
  const roles = await client.query<{rolname: string}>(REFERENCED_ROLES_SQL, [ownersAndPrivileges])
  return {
    ownersAndPrivileges,
    referencedRoles: roles.rows.map((row) => row.rolname),
    securityDefinerFunctions: await securityDefinerFunctions(client),
  }
}
