import * as fs from 'node:fs/promises'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'

/**
 * `dbb restore` end to end with the database's own properties and privileges: what the
 * application relies on beyond its tables (who may connect, its search_path, per-role settings,
 * who may call a SECURITY DEFINER function) survives an in-place restore and a restore into a new
 * name, and a restore that would hand superuser powers to PUBLIC is refused with the target unchanged.
 */
describe('dbb restore keeps database properties and privileges (real PostgreSQL)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>

  const q = (sql: string, database = 'postgres') => cluster.psql(sql, database)

  beforeAll(async () => {
    cluster = await startPostgres()
    await q(`CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_user LOGIN; CREATE ROLE outsider LOGIN`)
    await q(`CREATE DATABASE crm OWNER app_owner`)
    await q(`REVOKE CONNECT, TEMPORARY ON DATABASE crm FROM PUBLIC; GRANT CONNECT ON DATABASE crm TO app_user`)
    await q(`ALTER DATABASE crm SET search_path = app, public; ALTER ROLE app_user IN DATABASE crm SET work_mem = '8MB'`)
    await q(`COMMENT ON DATABASE crm IS 'customer records'; ALTER DATABASE crm CONNECTION LIMIT 40`)
    await q(
      `SET ROLE app_owner;
       CREATE SCHEMA app;
       CREATE TABLE app.accounts (id int PRIMARY KEY, balance int);
       INSERT INTO app.accounts SELECT g, g FROM generate_series(1, 100) g;
       CREATE FUNCTION app.credit(n int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT n';
       REVOKE EXECUTE ON FUNCTION app.credit(int) FROM PUBLIC;
       GRANT USAGE ON SCHEMA app TO app_user;
       GRANT EXECUTE ON FUNCTION app.credit(int) TO app_user;`,
      'crm',
    )
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('crm'), BACKUP_LOCAL_DIR: backupDir}
    const backup = await runCli(['backup', 'run', '--no-prune'], env)
    expect(backup.code).toBe(0)
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  const properties = async (database: string) => ({
    owner: await q(`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '${database}'`),
    publicMayConnect: await q(`SELECT has_database_privilege('outsider', '${database}', 'CONNECT')`),
    appUserMayConnect: await q(`SELECT has_database_privilege('app_user', '${database}', 'CONNECT')`),
    settings: await q(
      `SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ' ' ORDER BY r.rolname NULLS FIRST)
         FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole
        WHERE d.datname = '${database}'`,
    ),
    comment: await q(`SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '${database}'`),
    connectionLimit: await q(`SELECT datconnlimit FROM pg_database WHERE datname = '${database}'`),
    functionOwner: await q(`SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'credit'`, database),
    outsiderMayCall: await q(`SELECT has_function_privilege('outsider', 'app.credit(int)', 'EXECUTE')`, database),
    appUserMayCall: await q(`SELECT has_function_privilege('app_user', 'app.credit(int)', 'EXECUTE')`, database),
  })

  it('an in-place restore carries over owner, ACL, settings, comment and connection limit; the plan says so', async () => {
    const before = await properties('crm')
    expect(before).toMatchObject({owner: 'app_owner', publicMayConnect: 'f', appUserMayConnect: 't', comment: 'customer records', connectionLimit: '40'})
    await q(`DELETE FROM app.accounts WHERE id > 50`, 'crm')
    const result = await runCli(['restore', 'latest', '--force'], env)
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/carry {5}from the current database: .*owner app_owner/)
    expect(result.stderr).toMatch(/\n {2}space {5}the restored database needs about [\d.]+ [kMG]?B/)
    expect(result.stderr).not.toMatch(/WARNING/)
    expect(await q(`SELECT count(*) FROM app.accounts`, 'crm')).toBe('100')
    expect(await properties('crm')).toEqual(before)
  })

  it('a restore into a new name takes the properties recorded in the backup', async () => {
    const result = await runCli(['restore', 'latest', '--force', '--target-db', 'crm_copy'], env)
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/carry {5}from the backup: /)
    const copy = await properties('crm_copy')
    expect(copy).toEqual({...(await properties('crm')), comment: 'customer records'})
    expect(await q(`SELECT count(*) FROM app.accounts`, 'crm_copy')).toBe('100')
  })

  it('refuses, before streaming, a no-owner dump whose SECURITY DEFINER function would become superuser-owned; the target is unchanged', async () => {
    const noOwnerDir = await tempDir()
    try {
      const noOwnerEnv = {...env, BACKUP_LOCAL_DIR: noOwnerDir, BACKUP_NO_OWNER: 'true'}
      expect((await runCli(['backup', 'run', '--no-prune'], noOwnerEnv)).code).toBe(0)
      await q(`INSERT INTO app.accounts VALUES (1000, 1)`, 'crm')
      const result = await runCli(['restore', 'latest', '--force'], noOwnerEnv)
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/preflight: .*SECURITY DEFINER/)
      expect(result.stderr).toContain('nothing was changed')
      expect(await q(`SELECT count(*) FROM app.accounts`, 'crm')).toBe('101')
      expect(await properties('crm')).toMatchObject({outsiderMayCall: 'f', functionOwner: 'app_owner'})

      // As the owning role (--owner), the import creates the function as app_owner and the recorded grants are put back.
      const asOwner = await runCli(['restore', 'latest', '--force', '--owner', 'app_owner', '--target-db', 'crm_owned'], noOwnerEnv)
      expect(asOwner.code).toBe(0)
      expect(await properties('crm_owned')).toMatchObject({functionOwner: 'app_owner', outsiderMayCall: 'f', appUserMayCall: 't'})
    } finally {
      await fs.rm(noOwnerDir, {recursive: true, force: true})
    }
  })
})
