import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {BIN, cliEnv, collect, runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived, waitForPromotion} from '../helpers/wal'

/**
 * Continuous archiving end to end, as an operator runs it: archive_command = dbb wal push, a base
 * backup with dbb backup run --type base, the cluster lost, dbb restore --type base, PostgreSQL
 * started on the restored directory replays the archived WAL.
 */
// Replay runs one `dbb wal fetch` process per segment: seconds apiece on a loaded 2-core machine.
const RECOVERY_TEST_TIMEOUT_MS = 300_000

describe('point-in-time recovery (real PostgreSQL, archive_command = dbb wal push)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string

  beforeEach(async () => {
    storeDir = await makeServerOwnedDir('dbb-pitr-store-')
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
  })

  afterEach(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  const storageEnv = () => ({BACKUP_LOCAL_DIR: storeDir})

  it('restores the latest base backup and replays every archived WAL segment: all rows written before the stop are back', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g')

    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), ...storageEnv()})
    expect(backup.stderr).not.toContain(db.password)
    expect(backup.code).toBe(0)
    const {metadata} = JSON.parse(backup.stdout)
    expect(metadata).toMatchObject({type: 'base', format: 'tar', compression: 'gzip', timeline: 1, database: '*'})
    expect(metadata.id).toMatch(/^backup_\d{8}T\d{6}Z\.tar\.gz$/)
    expect(metadata.startLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
    expect(metadata.firstWalSegment).toMatch(/^00000001[0-9A-F]{16}$/)

    const list = await runCli(['backup', 'list', '--type', 'base', '--json'], storageEnv())
    expect(JSON.parse(list.stdout).map((entry: {id: string}) => entry.id)).toEqual([metadata.id])

    await db.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1001, 1500) g')
    await db.psql('CREATE TABLE after_backup AS SELECT 42 AS answer')
    await switchWalAndWaitArchived(db, storeDir)

    const whileRunning = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force'], storageEnv())
    expect(whileRunning.code).toBe(2)
    expect(whileRunning.stderr).toMatch(/PostgreSQL is running on/)
    // The same restore from a pid namespace where the postmaster's pid names nothing (dbb in a
    // sidecar or a Job sharing the volume): a pid check alone would go on and delete a running
    // cluster's files; the postmaster.pid that stands is refused, exit 2, the server untouched.
    const namespaceArgs = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user']
    const fromElsewhere = await collect(
      spawn('unshare', [...namespaceArgs, '--pid', '--fork', '--mount-proc', process.execPath, BIN, 'restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force'], {
        env: cliEnv(storageEnv()),
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    )
    expect(fromElsewhere.code).toBe(2)
    expect(fromElsewhere.stderr).toMatch(
      process.getuid?.() === 0 ? /postmaster\.pid stands \(postmaster pid \d+, started [^)]+\) and no such process runs here, but PostgreSQL may be running on .* in another container or pid namespace/ : /postmaster\.pid cannot be read/,
    )
    expect(await db.psql('SELECT count(*) FROM orders')).toBe('1500')
    expect(await fs.readdir(db.dataDir)).toContain('global')

    await db.stop()
    const notEmpty = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir], storageEnv())
    expect(notEmpty.code).toBe(2)
    expect(notEmpty.stderr).toMatch(/is not empty.*--force/)

    await fs.rm(db.dataDir, {recursive: true, force: true})
    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--json'], storageEnv())
    expect(restore.code).toBe(0)
    const outcome = JSON.parse(restore.stdout)
    expect(outcome).toMatchObject({id: metadata.id, pgdata: db.dataDir, target: null, sha256: metadata.sha256})
    expect(await fs.readFile(path.join(db.dataDir, 'recovery.signal'), 'utf8')).toBe('')
    const autoConf = await fs.readFile(path.join(db.dataDir, 'postgresql.auto.conf'), 'utf8')
    // dbb's sh foreground, sourced into PostgreSQL's sh, with this dbb's Node and the archive's settings.
    const foreground = path.resolve('bin/dbb-wal')
    expect(autoConf).toContain(`restore_command = 'set -- fetch --storage local --local-dir ${storeDir} %f %p; DBB_NODE=${process.execPath}; DBB_WAL=${foreground}; command . ${foreground}; exit 200'`)

    await db.start()
    await waitForPromotion(db)
    expect(await db.psql('SELECT count(*), max(id) FROM orders')).toBe('1500|1500')
    expect(await db.psql('SELECT answer FROM after_backup')).toBe('42')
    expect(await db.psql(`SELECT md5(string_agg(note, '' ORDER BY id)) = md5(string_agg(md5(id::text), '' ORDER BY id)) FROM orders`)).toBe('t')
  }, RECOVERY_TEST_TIMEOUT_MS)

  it('restores to a recorded time: exactly the rows committed before it', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE events (id int PRIMARY KEY, phase text)')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), ...storageEnv()})
    expect(backup.code).toBe(0)

    await db.psql(`INSERT INTO events SELECT g, 'before' FROM generate_series(1, 300) g`)
    const target = await db.psql('SELECT clock_timestamp()')
    await new Promise((resolve) => setTimeout(resolve, 50))
    await db.psql(`INSERT INTO events SELECT g, 'after' FROM generate_series(301, 400) g`)
    await db.psql(`DELETE FROM events WHERE id <= 10`)
    await switchWalAndWaitArchived(db, storeDir)
    await db.stop()

    const restore = await runCli(
      ['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--force', '--target-time', target, '--json'],
      storageEnv(),
    )
    expect(restore.code).toBe(0)
    expect(JSON.parse(restore.stdout).target).toEqual({kind: 'time', value: target})
    const autoConf = await fs.readFile(path.join(db.dataDir, 'postgresql.auto.conf'), 'utf8')
    expect(autoConf).toContain(`recovery_target_time = '${target}'`)
    expect(autoConf).toContain(`recovery_target_action = 'promote'`)

    await db.start()
    await waitForPromotion(db)
    expect(await db.psql(`SELECT phase, count(*), min(id), max(id) FROM events GROUP BY phase`)).toBe('before|300|1|300')
  }, RECOVERY_TEST_TIMEOUT_MS)

  it('refuses a target time before every base backup, and malformed targets, without touching the directory', async () => {
    const db = cluster!
    expect((await runCli(['backup', 'run', '--type', 'base'], {...db.dbbEnv(), ...storageEnv()})).code).toBe(0)
    await db.stop()
    const empty = await makeServerOwnedDir('dbb-pitr-target-')
    const tooEarly = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', empty, '--target-time', '2000-01-01 00:00:00+00'], storageEnv())
    expect(tooEarly.code).toBe(1)
    expect(tooEarly.stderr).toMatch(/no base backup .* ended before the target 2000-01-01/)
    const noZone = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', empty, '--target-time', '2026-11-21 10:00'], storageEnv())
    expect(noZone.code).toBe(2)
    expect(noZone.stderr).toMatch(/--target-time: .* time zone \(example:/)
    const both = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', empty, '--target-lsn', '0/3000000', '--target-name', 'x'], storageEnv())
    expect(both.code).toBe(2)
    expect(await fs.readdir(empty)).toEqual([])
    await fs.rm(empty, {recursive: true, force: true})
  })
})
