import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'

describe('dbb backup run: owners and privileges by default, BACKUP_NO_OWNER=true without (real PostgreSQL, built CLI)', () => {
  let cluster: PgCluster
  let backupDir: string

  beforeAll(async () => {
    cluster = await startPostgres()
    backupDir = await tempDir()
    await cluster.psql(`CREATE ROLE app_owner; CREATE ROLE app_user`)
    await cluster.psql(`CREATE DATABASE app OWNER app_owner`)
    await cluster.psql(
      `SET ROLE app_owner;
       CREATE TABLE items (id int);
       CREATE FUNCTION bump() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
       REVOKE EXECUTE ON FUNCTION bump() FROM PUBLIC;
       GRANT EXECUTE ON FUNCTION bump() TO app_user;`,
      'app',
    )
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  const backup = async (extra: Record<string, string>) => {
    const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('app'), BACKUP_LOCAL_DIR: backupDir, ...extra})
    expect(result.code).toBe(0)
    const {metadata} = JSON.parse(result.stdout)
    const sql = gunzipSync(await fs.readFile(path.join(backupDir, metadata.id))).toString('utf8')
    return {metadata, sql}
  }

  it('keeps ALTER … OWNER TO and GRANT/REVOKE, and records the database profile and role facts in the sidecar', async () => {
    const {metadata, sql} = await backup({})
    expect(sql).toContain('ALTER FUNCTION public.bump() OWNER TO app_owner;')
    expect(sql).toContain('REVOKE ALL ON FUNCTION public.bump() FROM PUBLIC;')
    expect(sql).toContain('GRANT ALL ON FUNCTION public.bump() TO app_user;')
    expect(metadata.privileges).toEqual({
      ownersAndPrivileges: true,
      referencedRoles: ['app_owner', 'app_user', 'pg_database_owner'],
      securityDefinerFunctions: [{signature: 'public.bump()', owner: 'app_owner', ownerIsSuperuser: false, publicExecute: false, executeGrantees: ['app_owner', 'app_user']}],
    })
    expect(metadata.databaseProfile).toMatchObject({owner: 'app_owner', acl: null, settings: [], connectionLimit: -1})
  })

  it('with BACKUP_NO_OWNER=true dumps neither, and says so in the sidecar', async () => {
    const {metadata, sql} = await backup({BACKUP_NO_OWNER: 'true'})
    expect(sql).not.toMatch(/OWNER TO|^GRANT|^REVOKE/m)
    expect(metadata.privileges).toMatchObject({ownersAndPrivileges: false, referencedRoles: []})
    expect(metadata.privileges.securityDefinerFunctions).toHaveLength(1)
  })

  it('refuses BACKUP_NO_OWNER=maybe with exit 2 naming the variable', async () => {
    const result = await runCli(['backup', 'run'], {...cluster.dbbEnv('app'), BACKUP_LOCAL_DIR: backupDir, BACKUP_NO_OWNER: 'maybe'})
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('BACKUP_NO_OWNER: must be true or false')
  })
})
