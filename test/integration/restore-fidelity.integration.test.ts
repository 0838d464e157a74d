import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'
import {Client} from 'pg'

import {DatabaseProfile, captureDatabaseProfile, captureDumpPrivileges} from '../../src/backup/database-profile'
import {BackupMetadata, readSidecar} from '../../src/backup/metadata'
import {runLogicalBackup} from '../../src/backup/run-backup'
import type {DatabaseConfig} from '../../src/config'
import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src'
import {
  applyDatabaseProfile,
  describeCarryOver,
  describeEscalations,
  findEscalations,
  finishStaging,
  readDatabaseProfile,
  reapplyFunctionPrivileges,
} from '../../src/restore/fidelity'
import {planRestoreFidelity, preflight} from '../../src/restore/preflight'
import {tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'

const exec = promisify(execFile)

/** A database with everything a plain `pg_dump DB` does not carry, and a SECURITY DEFINER function only some roles may call. */
const SOURCE_DB = 'app_ünïcødé'
const ROLES = `
  CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw';
  CREATE ROLE app_user LOGIN PASSWORD 'user-pw';
  CREATE ROLE "rôle_auditeur";
  CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw';`
const DATABASE_PROPERTIES = `
  CREATE DATABASE "${SOURCE_DB}" OWNER app_owner TEMPLATE template0;
  REVOKE CONNECT, TEMPORARY ON DATABASE "${SOURCE_DB}" FROM PUBLIC;
  GRANT CONNECT ON DATABASE "${SOURCE_DB}" TO app_user;
  GRANT CONNECT ON DATABASE "${SOURCE_DB}" TO "rôle_auditeur" WITH GRANT OPTION;
  COMMENT ON DATABASE "${SOURCE_DB}" IS 'Kundendaten — ne pas effacer';
  ALTER DATABASE "${SOURCE_DB}" SET search_path = app, "$user", public;
  ALTER DATABASE "${SOURCE_DB}" SET statement_timeout = '5min';
  ALTER ROLE app_user IN DATABASE "${SOURCE_DB}" SET work_mem = '8MB';
  ALTER ROLE "rôle_auditeur" IN DATABASE "${SOURCE_DB}" SET default_transaction_read_only = on;
  ALTER DATABASE "${SOURCE_DB}" CONNECTION LIMIT 42;`
const CONTENTS = `
  SET ROLE app_owner;
  CREATE SCHEMA app;
  CREATE TABLE app.accounts (id int PRIMARY KEY, tenant text NOT NULL, balance int NOT NULL);
  INSERT INTO app.accounts VALUES (1, 'a', 10), (2, 'b', 20);
  ALTER TABLE app.accounts ENABLE ROW LEVEL SECURITY;
  CREATE POLICY tenant_a ON app.accounts TO app_user USING (tenant = 'a');
  GRANT USAGE ON SCHEMA app TO app_user;
  GRANT SELECT ON app.accounts TO app_user;
  CREATE FUNCTION app.credit(amount int) RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = app
    AS 'UPDATE app.accounts SET balance = balance + amount';
  REVOKE EXECUTE ON FUNCTION app.credit(int) FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION app.credit(int) TO app_user;
  RESET ROLE;`

function sortedAcl(profile: DatabaseProfile | undefined) {
  return [...(profile?.acl ?? [])].sort((a, b) => `${a.grantee}/${a.privilege}`.localeCompare(`${b.grantee}/${b.privilege}`))
}

/** The properties a restore must reproduce: everything but the informational ones (size, encoding, locale). */
function restorable(profile: DatabaseProfile | undefined) {
  if (!profile) return profile
  return {
    owner: profile.owner,
    acl: sortedAcl(profile),
    comment: profile.comment,
    settings: profile.settings,
    roleSettings: profile.roleSettings,
    connectionLimit: profile.connectionLimit,
  }
}

describe('database properties, ownership and preflight (real PostgreSQL, two servers)', () => {
  let source: PgCluster
  let fresh: PgCluster
  let dir: string
  let storage: LocalBackend
  const logger = createLogger({level: 'silent'})
  const clients: Client[] = []
  const connect = async (cluster: PgCluster, database = 'postgres', user = cluster.user, password = cluster.password) => {
    const client = new Client({host: cluster.host, port: cluster.port, user, password, database})
    await client.connect()
    clients.push(client)
    return client
  }

  const config = (cluster: PgCluster, database: string): DatabaseConfig => ({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database})
  const stockRestore = async (dumpFile: string, cluster: PgCluster, database: string, preamble = '') =>
    exec('bash', ['-o', 'pipefail', '-c', `{ printf '%s\\n' "$PREAMBLE"; gunzip -c "$DUMP"; } | psql -X -q -v ON_ERROR_STOP=1 -d "$DB"`], {
      env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password, DUMP: dumpFile, DB: database, PREAMBLE: preamble},
      maxBuffer: 64 * 1024 * 1024,
    })
  const backups = new Map<boolean, Promise<BackupMetadata>>()
  /** One backup of the source per mode, taken on first use. */
  const backup = async (noOwner: boolean): Promise<BackupMetadata> => {
    if (!backups.has(noOwner)) {
      const run = runLogicalBackup(
        {database: config(source, SOURCE_DB), storage, namePrefix: noOwner ? 'noowner' : 'owners', retention: {retentionDays: 0, orphanGraceMs: 3_600_000}, logger, logicalDump: {noOwner}},
        {triggeredBy: 'cli', prune: false},
      )
      backups.set(noOwner, run.then((outcome) => outcome.metadata))
    }

    return backups.get(noOwner) as Promise<BackupMetadata>
  }

  beforeAll(async () => {
    ;[source, fresh] = await Promise.all([startPostgres(), startPostgres()])
    dir = await tempDir()
    storage = new LocalBackend(dir)
    await source.psql(ROLES)
    for (const statement of DATABASE_PROPERTIES.split(';').filter((line) => line.trim())) await source.psql(statement)
    await source.psql(CONTENTS, SOURCE_DB)
  })

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.end().catch(() => {})))
  })

  afterAll(async () => {
    await Promise.all([source?.destroy(), fresh?.destroy()])
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('captures the database profile and applies it to a fresh database: read back, it equals the source', async () => {
    const admin = await connect(source)
    const profile = await captureDatabaseProfile(admin, SOURCE_DB)
    expect(profile).toMatchObject({
      owner: 'app_owner',
      comment: 'Kundendaten — ne pas effacer',
      connectionLimit: 42,
      settings: expect.arrayContaining(['search_path=app, "$user", public', 'statement_timeout=5min']),
      roleSettings: [
        {role: 'app_user', settings: ['work_mem=8MB']},
        {role: 'rôle_auditeur', settings: ['default_transaction_read_only=on']},
      ],
      encoding: 'UTF8',
    })
    expect(sortedAcl(profile).filter((entry) => entry.grantee === '')).toEqual([])

    await admin.query(`CREATE DATABASE "copie_ü" TEMPLATE template0`)
    const report = await applyDatabaseProfile(admin, 'copie_ü', profile as DatabaseProfile)
    expect(report.skipped).toEqual([])
    expect(restorable(await readDatabaseProfile(admin, 'copie_ü'))).toEqual(restorable(profile))

    // What the application relies on: PUBLIC may not connect, app_user may, and gets the settings.
    const checks = await admin.query(
      `SELECT has_database_privilege('outsider', 'copie_ü', 'CONNECT') AS outsider, has_database_privilege('app_user', 'copie_ü', 'CONNECT') AS app_user`,
    )
    expect(checks.rows[0]).toEqual({outsider: false, app_user: true})
    const asUser = await connect(source, 'copie_ü', 'app_user', 'user-pw')
    const settings = await asUser.query(`SELECT current_setting('search_path') AS path, current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS timeout`)
    expect(settings.rows[0]).toEqual({path: 'app, "$user", public', work_mem: '8MB', timeout: '5min'})
    await expect(connect(source, 'copie_ü', 'outsider', 'outsider-pw')).rejects.toThrow(/permission denied for database/)
  })

  it('applies onto another server without a role: skips what names it, says so in the plan, applies the rest', async () => {
    const profile = (await captureDatabaseProfile(await connect(source), SOURCE_DB)) as DatabaseProfile
    await fresh.psql(`CREATE ROLE app_owner; CREATE ROLE app_user`)
    const admin = await connect(fresh)
    await admin.query(`CREATE DATABASE "${SOURCE_DB}" TEMPLATE template0`)
    // Plus what a hand-edited sidecar or another server version could hold: each is one skipped item.
    const report = await applyDatabaseProfile(admin, SOURCE_DB, {...profile, settings: [...profile.settings, 'malformed', 'no_such_setting=1']})
    expect(report.skipped.map((entry) => entry.item).sort()).toEqual([
      'ALTER DATABASE SET malformed',
      'ALTER DATABASE SET no_such_setting=1',
      'ALTER ROLE rôle_auditeur IN DATABASE SET default_transaction_read_only=on',
      'grant CONNECT to rôle_auditeur WITH GRANT OPTION',
    ])
    expect(report.skipped.filter((entry) => entry.item.includes('rôle_auditeur')).every((entry) => entry.reason === 'role "rôle_auditeur" does not exist on this server')).toBe(true)
    expect(report.skipped.find((entry) => entry.item.includes('no_such_setting'))?.reason).toMatch(/unrecognized configuration parameter/)
    const applied = await readDatabaseProfile(admin, SOURCE_DB)
    expect(applied).toMatchObject({owner: 'app_owner', connectionLimit: 42, comment: profile.comment, settings: profile.settings})
    expect(sortedAcl(applied).map((entry) => entry.grantee)).not.toContain('')

    const plan = describeCarryOver(profile, 'backup', new Set(['app_owner', 'app_user']))
    expect(plan.willCarryOver).toEqual(
      expect.arrayContaining([
        'owner app_owner',
        'CONNECT and TEMPORARY revoked from PUBLIC',
        'search_path=app, "$user", public',
        'work_mem=8MB for role app_user',
        'connection limit 42',
      ]),
    )
    expect(plan.willNotCarryOver).toEqual(
      expect.arrayContaining([
        'GRANT CONNECT* to rôle_auditeur (role rôle_auditeur does not exist on this server)',
        'default_transaction_read_only=on for role rôle_auditeur (role rôle_auditeur does not exist on this server)',
      ]),
    )
    expect(describeCarryOver(undefined, 'backup').willNotCarryOver[0]).toMatch(/predates/)
    await admin.query(`DROP DATABASE "${SOURCE_DB}"`)
    await fresh.psql(`DROP ROLE app_owner; DROP ROLE app_user`)
  })

  it('backs up with owners and grants by default: stock gunzip | psql on a server with the roles keeps owners, grants, RLS', async () => {
    const metadata = await backup(false)
    const sidecar = await readSidecar(storage, metadata.id)
    expect(sidecar.privileges).toMatchObject({ownersAndPrivileges: true, referencedRoles: ['app_owner', 'app_user', 'pg_database_owner']})
    expect(sidecar.privileges?.securityDefinerFunctions).toEqual([
      {signature: 'app.credit(integer)', owner: 'app_owner', ownerIsSuperuser: false, publicExecute: false, executeGrantees: ['app_owner', 'app_user']},
    ])
    expect(sidecar.databaseProfile).toMatchObject({owner: 'app_owner', connectionLimit: 42})

    // Preflight on the fresh server: the dump names roles it lacks → refused, naming them.
    const admin = await connect(fresh)
    const refused = await preflight(admin, {backup: sidecar, targetDatabase: SOURCE_DB, psqlVersion: '15.18'})
    expect(refused.ok).toBe(false)
    expect(refused.problems.map((problem) => problem.code)).toEqual(['MISSING_ROLES'])
    expect(refused.problems[0].message).toContain('app_owner, app_user')
    expect(refused.facts.missingRoles).toEqual(['app_owner', 'app_user'])

    await ensureRoles(fresh, ['app_owner', 'app_user', 'outsider'])
    const passed = await preflight(admin, {backup: sidecar, targetDatabase: SOURCE_DB, psqlVersion: '15.18'})
    expect(passed.problems).toEqual([])
    expect(passed.warnings.map((warning) => warning.code)).toEqual(['PROFILE_ROLES_MISSING', 'DISK_SPACE_HINT'])
    const asUser = await preflight(admin, {backup: sidecar, targetDatabase: SOURCE_DB, psqlVersion: '15.18', ownerRole: 'app_user'})
    expect(asUser.warnings.find((warning) => warning.code === 'OWNER_ROLE_WITH_OWNERS')?.message).toMatch(/app_user is not a member of app_owner, pg_database_owner$/)

    await admin.query(`CREATE DATABASE "${SOURCE_DB}" TEMPLATE template0`)
    await stockRestore(path.join(dir, metadata.id), fresh, SOURCE_DB)
    const facts = await fresh.psql(
      `SELECT concat_ws(' ', p.proowner::regrole, has_function_privilege('app_user', p.oid, 'EXECUTE'), has_function_privilege('outsider', p.oid, 'EXECUTE'),
              (SELECT relowner::regrole FROM pg_class WHERE oid = 'app.accounts'::regclass),
              (SELECT relrowsecurity FROM pg_class WHERE oid = 'app.accounts'::regclass),
              (SELECT string_agg(polname || ':' || array_to_string(polroles::regrole[], ','), ';') FROM pg_policy),
              has_table_privilege('app_user', 'app.accounts', 'SELECT'), has_table_privilege('outsider', 'app.accounts', 'SELECT'))
       FROM pg_proc p WHERE p.oid = 'app.credit(int)'::regprocedure`,
      SOURCE_DB,
    )
    expect(facts).toBe('app_owner t f app_owner t tenant_a:app_user t f')
    const restored = await connect(fresh, SOURCE_DB)
    expect(await findEscalations(restored, sidecar.privileges?.securityDefinerFunctions)).toEqual([])
  })

  it('a no-owner dump restored as superuser is refused in preflight, and findEscalations catches the escalation a stock import creates', async () => {
    const metadata = await backup(true)
    const sidecar = await readSidecar(storage, metadata.id)
    expect(sidecar.privileges).toMatchObject({ownersAndPrivileges: false, referencedRoles: ['app_user']})
    await ensureRoles(fresh, ['app_owner', 'app_user', 'outsider'])
    const admin = await connect(fresh)
    const result = await preflight(admin, {backup: sidecar, targetDatabase: 'noowner_copy', psqlVersion: '15.18'})
    expect(result.problems.map((problem) => problem.code)).toEqual(['SECURITY_DEFINER_AS_SUPERUSER'])
    expect(result.problems[0].message).toContain('app.credit(integer)')
    expect(result.problems[0].fix).toContain('--owner app_owner')
    const ownerPlan = await preflight(admin, {backup: sidecar, targetDatabase: 'noowner_copy', psqlVersion: '15.18', ownerRole: 'app_owner'})
    expect(ownerPlan.problems).toEqual([])

    // What the old default did: a stock import as superuser makes app.credit superuser-owned and PUBLIC-executable.
    await admin.query(`CREATE DATABASE noowner_copy TEMPLATE template0`)
    await stockRestore(path.join(dir, metadata.id), fresh, 'noowner_copy')
    const escalated = await connect(fresh, 'noowner_copy')
    const escalations = await findEscalations(escalated, sidecar.privileges?.securityDefinerFunctions)
    expect(escalations).toEqual([
      {
        signature: 'app.credit(integer)',
        owner: 'postgres',
        publicExecute: true,
        reason: 'PUBLIC may execute it, which it could not before; it is owned by superuser postgres instead of app_owner',
        recorded: {signature: 'app.credit(integer)', owner: 'app_owner', ownerIsSuperuser: false, publicExecute: false, executeGrantees: ['app_owner', 'app_user']},
      },
    ])
    expect(describeEscalations(escalations)).toContain(
      'app.credit(integer): PUBLIC may execute it, which it could not before; it is owned by superuser postgres instead of app_owner (in the backup: owned by app_owner, executable by app_owner, app_user)',
    )
    // A backup from before the recording: the superuser + PUBLIC rule alone still catches it.
    expect((await findEscalations(escalated)).map((escalation) => escalation.reason)).toEqual(['it is owned by superuser postgres and PUBLIC may execute it'])

    // Imported as the owning role (what --owner does with SET ROLE): owned by app_owner, but PUBLIC may call it
    // (the dump has no REVOKE) — still refused, until the recorded grants are put back.
    await admin.query(`CREATE DATABASE noowner_as_owner OWNER app_owner TEMPLATE template0`)
    await stockRestore(path.join(dir, metadata.id), fresh, 'noowner_as_owner', 'SET ROLE app_owner;')
    const asOwner = await connect(fresh, 'noowner_as_owner')
    const recorded = sidecar.privileges?.securityDefinerFunctions ?? []
    expect((await findEscalations(asOwner, recorded)).map((escalation) => escalation.reason)).toEqual(['PUBLIC may execute it, which it could not before'])
    const reapplied = await reapplyFunctionPrivileges(asOwner, recorded)
    expect(reapplied).toEqual({applied: ['revoke EXECUTE on app.credit(integer) from PUBLIC', 'grant EXECUTE on app.credit(integer) to app_user'], skipped: []})
    expect(await findEscalations(asOwner, recorded)).toEqual([])
    const callers = await fresh.psql(
      `SELECT concat_ws(' ', proowner::regrole, has_function_privilege('app_user', oid, 'EXECUTE'), has_function_privilege('outsider', oid, 'EXECUTE'))
       FROM pg_proc WHERE oid = 'app.credit(int)'::regprocedure`,
      'noowner_as_owner',
    )
    expect(callers).toBe('app_owner t f')
    // A sidecar naming a function the database does not have changes nothing.
    const crafted = await reapplyFunctionPrivileges(asOwner, [{...recorded[0], signature: 'app.credit(integer) TO PUBLIC; DROP TABLE app.accounts; --'}])
    expect(crafted.applied).toEqual([])
    expect(await fresh.psql(`SELECT count(*) FROM app.accounts`, 'noowner_as_owner')).toBe('2')
  })

  it('allows a superuser-owned, PUBLIC-executable SECURITY DEFINER function only when the backup recorded it that way', async () => {
    await source.psql(`CREATE FUNCTION public.whoami() RETURNS name LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user'`, SOURCE_DB)
    const client = await connect(source, SOURCE_DB)
    const recorded = (await captureDumpPrivileges(client, true)).securityDefinerFunctions
    expect(recorded.find((fn) => fn.signature === 'public.whoami()')).toMatchObject({owner: 'postgres', ownerIsSuperuser: true, publicExecute: true})
    expect(await findEscalations(client, recorded)).toEqual([])
    expect((await findEscalations(client, [])).map((escalation) => escalation.signature)).toEqual(['public.whoami()'])
    await source.psql(`DROP FUNCTION public.whoami()`, SOURCE_DB)
  })

  it('plan → import into staging → finishStaging → rename: a new name gets the backup\'s properties, in place the old target\'s', async () => {
    const sidecar = await readSidecar(storage, (await backup(false)).id)
    await ensureRoles(fresh, ['app_owner', 'app_user', 'outsider'])
    const admin = await connect(fresh)
    const plan = await planRestoreFidelity(admin, {backup: sidecar, targetDatabase: 'planned', psqlVersion: '15.18'})
    expect(plan.preflight.ok).toBe(true)
    expect(plan.profileSource).toBe('backup')
    expect(plan.carryOver.from).toBe('the backup')
    expect(plan.carryOver.willCarryOver).toContain('owner app_owner')
    expect(plan.carryOver.willNotCarryOver[0]).toBe('GRANT CONNECT* to rôle_auditeur (role rôle_auditeur does not exist on this server)')

    await admin.query('CREATE DATABASE planned_staging TEMPLATE template0')
    await stockRestore(path.join(dir, sidecar.id), fresh, 'planned_staging')
    const staging = await connect(fresh, 'planned_staging')
    const report = await finishStaging({stagingClient: staging, maintenanceClient: admin, stagingName: 'planned_staging', backup: sidecar, profile: plan.profile})
    expect(report.functionPrivileges).toBeUndefined()
    expect(report.profile?.skipped.map((entry) => entry.item)).toHaveLength(2)
    await staging.end()
    await admin.query('ALTER DATABASE planned_staging RENAME TO planned')
    expect(await readDatabaseProfile(admin, 'planned')).toMatchObject({owner: 'app_owner', connectionLimit: 42, comment: 'Kundendaten — ne pas effacer'})
    expect((await admin.query(`SELECT has_database_privilege('outsider', 'planned', 'CONNECT') AS c`)).rows[0].c).toBe(false)

    // In place: what the live database has now wins over the backup.
    await admin.query(`COMMENT ON DATABASE planned IS 'changed since the backup'`)
    const inPlace = await planRestoreFidelity(admin, {backup: sidecar, targetDatabase: 'planned', psqlVersion: '15.18'})
    expect(inPlace.profileSource).toBe('old-target')
    expect(inPlace.carryOver.willCarryOver).toContain('comment "changed since the backup"')

    // A no-owner dump imported as superuser: finishStaging refuses, naming the function.
    const noOwner = await readSidecar(storage, (await backup(true)).id)
    await admin.query('CREATE DATABASE escalated_staging TEMPLATE template0')
    await stockRestore(path.join(dir, noOwner.id), fresh, 'escalated_staging')
    const escalated = await connect(fresh, 'escalated_staging')
    await expect(finishStaging({stagingClient: escalated, maintenanceClient: admin, stagingName: 'escalated_staging', backup: noOwner, profile: plan.profile})).rejects.toThrow(
      /app\.credit\(integer\): it is owned by superuser postgres instead of app_owner/,
    )
    // Nothing of the profile was applied to the refused database.
    expect((await readDatabaseProfile(admin, 'escalated_staging'))?.owner).toBe('postgres')
  })

  it('refuses in preflight a user without CREATEDB, and one who does not own the target', async () => {
    await source.psql(`CREATE ROLE restorer LOGIN PASSWORD 'restorer-pw'`)
    const admin = await connect(source)
    const sidecar = {
      ...(await backupLikeMetadata(admin)),
    }
    const asRestorer = await connect(source, 'postgres', 'restorer', 'restorer-pw')
    const result = await preflight(asRestorer, {backup: sidecar, targetDatabase: SOURCE_DB, psqlVersion: '15.18'})
    expect(result.ok).toBe(false)
    expect(result.problems.map((problem) => problem.code)).toEqual(['CREATEDB_REQUIRED', 'NOT_TARGET_OWNER'])
    expect(result.problems[0]).toMatchObject({message: 'restorer may not create databases: the restore imports into a new database first', fix: 'as a superuser: ALTER ROLE restorer CREATEDB'})
    expect(result.problems[1].message).toContain(`owned by app_owner`)
    expect(result.warnings.map((warning) => warning.code)).toContain('CANNOT_TERMINATE_SESSIONS')

    await source.psql(`ALTER ROLE restorer CREATEDB; GRANT app_owner TO restorer`)
    const allowed = await preflight(asRestorer, {backup: sidecar, targetDatabase: SOURCE_DB, psqlVersion: '15.18'})
    expect(allowed.problems).toEqual([])

    // A psql without \restrict support cannot read a dump from a pg_dump that writes it.
    const oldPsql = await preflight(asRestorer, {backup: {...sidecar, pgDumpVersion: '15.18'}, targetDatabase: SOURCE_DB, psqlVersion: '15.13'})
    expect(oldPsql.problems.map((problem) => problem.code)).toEqual(['PSQL_TOO_OLD'])
    const newerDump = await preflight(asRestorer, {backup: {...sidecar, pgDumpVersion: '17.6', pgVersion: '17.6'}, targetDatabase: SOURCE_DB, psqlVersion: '17.6'})
    expect(newerDump.warnings.map((warning) => warning.code)).toContain('SERVER_OLDER_THAN_DUMP')
  })
})

async function ensureRoles(cluster: PgCluster, roles: string[]): Promise<void> {
  for (const role of roles) {
    await cluster.psql(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${role}; END IF; END $$`)
  }
}

/** Sidecar fields as a backup of the source database records them, without running pg_dump. */
async function backupLikeMetadata(client: Client): Promise<BackupMetadata> {
  const profile = await captureDatabaseProfile(client, SOURCE_DB)
  return {
    id: 'backup_20261202T000000Z.sql.gz',
    type: 'logical',
    createdAt: '2026-12-02T00:00:00.000Z',
    sizeBytes: 1,
    sha256: '0'.repeat(64),
    durationMs: 1,
    triggeredBy: 'cli',
    database: SOURCE_DB,
    pgVersion: '15.18',
    pgDumpVersion: '15.18',
    format: 'plain',
    compression: 'gzip',
    databaseProfile: profile,
    privileges: {ownersAndPrivileges: true, referencedRoles: ['app_owner', 'app_user'], securityDefinerFunctions: []},
  }
}
