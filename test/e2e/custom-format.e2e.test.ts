import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {EXIT_DRILL_FAILED} from '../../src/errors'
import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

/**
 * BACKUP_FORMAT=custom (issue 20 item 3) end to end on a real PostgreSQL: pg_dump's custom archive
 * through dbb's codec, restored by pg_restore through the same staging + swap as plain dumps,
 * serially from stdin or with --jobs from a private temporary file, selectively into a new
 * database, listed with --list, and drilled; stock tools restore the stored object too.
 */
describe('BACKUP_FORMAT=custom (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let tmp: string
  let env: Record<string, string>
  let gzipId: string
  let zstdId: string

  const q = (sql: string, database = 'postgres') => cluster.psql(sql, database)

  /** What a restore of shop must reproduce: seedDatabase's data, large objects, RLS, a SECURITY DEFINER function and its grants, non-ASCII names. */
  const contents = async (database: string) => {
    const {serial: _probe, ...seeded} = await fingerprint(cluster, database)
    return {
      ...seeded,
      largeObjects: await q(`SELECT count(*) || ':' || md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY oid)) FROM pg_largeobject_metadata`, database),
      rls: await q(`SELECT relrowsecurity || ':' || (SELECT string_agg(polname, ',') FROM pg_policy WHERE polrelid = c.oid) FROM pg_class c WHERE relname = 'customers'`, database),
      definer: await q(`SELECT prosecdef || ':' || pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'credit'`, database),
      outsiderMayCall: await q(`SELECT has_function_privilege('outsider', 'public.credit(int)', 'EXECUTE')`, database),
      nonAscii: await q(`SELECT string_agg(note, ',' ORDER BY id) FROM "Schéma ü"."Bestellungen 注文"`, database),
    }
  }

  const sidecar = async (id: string) => JSON.parse(await fs.readFile(path.join(backupDir, `${id}.meta.json`), 'utf8'))
  const databases = async () => (await q(`SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database`)).split(',')
  let shopBefore: Awaited<ReturnType<typeof contents>>

  beforeAll(async () => {
    cluster = await startPostgres()
    await q(`CREATE ROLE app_owner NOLOGIN; CREATE ROLE outsider LOGIN`)
    await seedDatabase(cluster, 'shop', 5000)
    await q(
      `CREATE SCHEMA "Schéma ü";
       CREATE TABLE "Schéma ü"."Bestellungen 注文" (id serial PRIMARY KEY, note text);
       INSERT INTO "Schéma ü"."Bestellungen 注文" (note) SELECT 'n' || g FROM generate_series(1, 7) g;
       SELECT lo_from_bytea(0, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, 3) g;
       ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
       CREATE POLICY own_rows ON customers USING (name = current_user);
       CREATE FUNCTION credit(n int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT n';
       ALTER FUNCTION credit(int) OWNER TO app_owner;
       REVOKE EXECUTE ON FUNCTION credit(int) FROM PUBLIC;`,
      'shop',
    )
    backupDir = await tempDir()
    tmp = await tempDir('dbb-custom-tmp-')
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir, TMPDIR: tmp}
    shopBefore = await contents('shop')

    const gzip = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_FORMAT: 'custom'})
    expect(gzip.stderr).not.toMatch(/"level":50/)
    expect(gzip.code).toBe(0)
    gzipId = JSON.parse(gzip.stdout).metadata.id
    const zstd = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_FORMAT: 'custom', COMPRESSION: 'zstd'})
    expect(zstd.code).toBe(0)
    zstdId = JSON.parse(zstd.stdout).metadata.id
  }, 120_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
    await fs.rm(tmp, {recursive: true, force: true})
  })

  it('stores a custom archive as .dump.gz / .dump.zst with format "custom" in the sidecar; stock pg_restore reads it', async () => {
    expect(gzipId).toMatch(/^backup_\d{8}T\d{6}Z(-\d+)?\.dump\.gz$/)
    expect(zstdId).toMatch(/^backup_\d{8}T\d{6}Z(-\d+)?\.dump\.zst$/)
    expect(await sidecar(gzipId)).toMatchObject({format: 'custom', compression: 'gzip', type: 'logical'})
    expect(await sidecar(zstdId)).toMatchObject({format: 'custom', compression: 'zstd'})
    // The archive inside is pg_dump's custom format (magic "PGDMP"), uncompressed by pg_dump itself.
    const archive = execFileSync('bash', ['-c', `gunzip -c "${path.join(backupDir, gzipId)}" | head -c 5`]).toString()
    expect(archive).toBe('PGDMP')
    const listed = await runCli(['backup', 'list', '--json'], env)
    expect(JSON.parse(listed.stdout).map((backup: {id: string}) => backup.id)).toEqual(expect.arrayContaining([gzipId, zstdId]))
  })

  it('restores a gzip and a zstd archive through pg_restore into new databases with everything the source had', async () => {
    for (const [id, target] of [[gzipId, 'shop_gz'], [zstdId, 'shop_zst']]) {
      const result = await runCli(['restore', id, '--force', '--target-db', target], env)
      expect(result.stderr).not.toMatch(/"level":50/)
      expect(result.code).toBe(0)
      expect(result.stdout).toContain(`Restored ${id} into database "${target}"`)
      expect(await contents(target)).toEqual(shopBefore)
    }

    expect(shopBefore.largeObjects).toMatch(/^3:/)
    expect(shopBefore.rls).toBe('true:own_rows')
    expect(shopBefore.definer).toBe('true:app_owner')
    expect(shopBefore.outsiderMayCall).toBe('f')
  })

  it('replaces an existing database in place (staging + swap) from a custom archive', async () => {
    await q(`DELETE FROM events WHERE id > 10`, 'shop_gz')
    const result = await runCli(['restore', gzipId, '--force', '--target-db', 'shop_gz'], env)
    expect(result.code).toBe(0)
    expect(await contents('shop_gz')).toEqual(shopBefore)
    expect((await databases()).filter((name) => name.includes('_dbb_'))).toEqual([])
  })

  it('stock tools restore the stored object: gunzip -c x.dump.gz | pg_restore -d db', async () => {
    await q(`CREATE DATABASE shop_stock`)
    const {host, port, user, password} = cluster
    execFileSync('bash', ['-c', `gunzip -c "${path.join(backupDir, gzipId)}" | pg_restore --exit-on-error -h ${host} -p ${port} -U ${user} -d shop_stock`], {
      env: {...process.env, PGPASSWORD: password},
    })
    expect(await contents('shop_stock')).toEqual(shopBefore)
  })

  it('--jobs 2 restores from a temporary file it announces, and leaves TMPDIR empty', async () => {
    const result = await runCli(['restore', zstdId, '--force', '--target-db', 'shop_par', '--jobs', '2'], env)
    expect(result.stderr).not.toMatch(/"level":50/)
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/--jobs 2: pg_restore needs a seekable file .* to .*dbb-restore-\d+@[0-9a-f]{8}\.\d+-[^/]+\/archive\.dump first \(removed when the restore ends\)/)
    expect(await contents('shop_par')).toEqual(shopBefore)
    expect(await fs.readdir(tmp)).toEqual([])
  })

  it('--table restores only that table, into a new database only', async () => {
    const result = await runCli(['restore', gzipId, '--force', '--target-db', 'shop_part', '--table', 'events'], env)
    expect(result.code).toBe(0)
    expect(await q(`SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace`, 'shop_part')).toBe('events')
    expect(await q(`SELECT count(*) FROM events`, 'shop_part')).toBe('5000')

    const before = await contents('shop')
    const refused = await runCli(['restore', gzipId, '--force', '--table', 'events'], env)
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch(/--table\/--schema restore a part of .*database "shop" exists and would be replaced by that part/)
    expect(await contents('shop')).toEqual(before)
  })

  it('--list prints the archive\'s table of contents, parsed with --json, touching no database', async () => {
    const text = await runCli(['restore', gzipId, '--list'], {BACKUP_LOCAL_DIR: backupDir, TMPDIR: tmp})
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^\d+; \d+ \d+ TABLE DATA public events /m)
    const json = await runCli(['restore', zstdId, '--list', '--json'], {BACKUP_LOCAL_DIR: backupDir, TMPDIR: tmp})
    expect(json.code).toBe(0)
    const listing = JSON.parse(json.stdout)
    expect(listing.header).toMatchObject({Format: 'CUSTOM', dbname: 'shop'})
    expect(listing.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({type: 'TABLE', schema: 'public', name: 'events'}),
        expect.objectContaining({type: 'TABLE', schema: 'Schéma ü', name: 'Bestellungen 注文'}),
        expect.objectContaining({type: 'FUNCTION', schema: 'public', name: 'credit(integer)', owner: 'app_owner'}),
        expect.objectContaining({type: 'POLICY', schema: 'public'}),
      ]),
    )
  })

  it('DB_NAMES runs: each database as a custom archive, the globals still plain SQL; restore --db takes the archive', async () => {
    const dir = await tempDir()
    try {
      const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, BACKUP_LOCAL_DIR: dir, BACKUP_FORMAT: 'custom', DB_NAMES: 'shop,shop_stock'})
      expect(result.code).toBe(0)
      const run = JSON.parse(result.stdout)
      expect(run.globals.backupId).toMatch(/^backup_-globals_\d{8}T\d{6}Z\.sql\.gz$/)
      expect(run.databases.map((part: {backupId: string}) => part.backupId).sort()).toEqual([
        expect.stringMatching(/^backup_shop-5fstock_\d{8}T\d{6}Z\.dump\.gz$/),
        expect.stringMatching(/^backup_shop_\d{8}T\d{6}Z\.dump\.gz$/),
      ])
      const globals = JSON.parse(await fs.readFile(path.join(dir, `${run.globals.backupId}.meta.json`), 'utf8'))
      expect(globals).toMatchObject({type: 'globals', format: 'plain'})
      const restore = await runCli(['restore', 'latest', '--db', 'shop', '--target-db', 'shop_multi', '--force'], {...env, BACKUP_LOCAL_DIR: dir})
      expect(restore.code).toBe(0)
      expect(restore.stdout).toMatch(/Restored backup_shop_\d{8}T\d{6}Z\.dump\.gz into database "shop_multi"/)
      expect(await contents('shop_multi')).toEqual(shopBefore)
    } finally {
      await fs.rm(dir, {recursive: true, force: true})
    }
  })

  it('a drill of a custom backup passes, and fails (exit 3) when a table lost rows', async () => {
    const passed = await runCli(['drill', gzipId], env)
    expect(passed.code).toBe(0)
    expect(passed.stderr).toContain('"event":"drill.passed"')

    // The sidecar's record says events had more rows than the archive restores: a dump that lost rows.
    const meta = await sidecar(zstdId)
    meta.contents.tables = meta.contents.tables.map((table: {name: string; rows: number}) => (table.name === 'events' ? {...table, rows: table.rows + 1} : table))
    await fs.writeFile(path.join(backupDir, `${zstdId}.meta.json`), JSON.stringify(meta))
    const failed = await runCli(['drill', zstdId], env)
    expect(failed.code).toBe(EXIT_DRILL_FAILED)
    expect(failed.stdout).toContain('public.events: expected 5001 rows, restored 5000 rows')
  })
})
