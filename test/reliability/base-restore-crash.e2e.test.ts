import {execFile} from 'node:child_process'
import {existsSync, statSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {STAGING_PREFIX, createStagingDirectory} from '../../src/restore/recovery-config'
import {runCli, startCli} from '../helpers/cli'
import {CRASH_SEED, KillPoint, phaseEvents, runWithKill, seededRandom} from '../helpers/crash-harness'
import {PgCluster, asServerUser, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, startRestoredServer, switchWalAndWaitArchived, waitFor} from '../helpers/wal'

const run = promisify(execFile)

/**
 * The crash-point matrix for `dbb restore --type base --force` over a data directory that holds
 * another cluster: SIGKILL at every phase boundary a clean restore logs and at seeded delays (some
 * inside the removal of the old cluster, made long by 4,000 extra files). After every kill the
 * directory must be exactly the old cluster, exactly the restored one (with its recovery settings),
 * or one PostgreSQL refuses to start (no global/pg_control) — never a half-deleted old cluster
 * PostgreSQL would start on, nor the backup without recovery.signal, which would start as a primary
 * at the backup's state and archive into the archive it came from. The next restore always succeeds,
 * and PostgreSQL then replays the archive and promotes.
 */
const RANDOM_POINTS = 4
const OLD_FILES = 4000
const MARKER = 'OLD_CLUSTER_MARKER'

describe('crash-point matrix: restore --type base over another cluster (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let storeDir: string
  let workDir: string
  let template: string
  let pgdata: string
  let oldListing: string[]
  let newListing: string[]
  let cleanMs = 0
  let phases: string[] = []
  const args = () => ['restore', '--type', 'base', 'latest', '--pgdata', pgdata, '--force']
  const env = () => ({BACKUP_LOCAL_DIR: storeDir})

  /**
   * Every path under `dir` with its size (directories with -), sorted, without the staging
   * directory: a kill before the swap leaves it beside the untouched old cluster (PostgreSQL
   * ignores it; the next restore removes it), one after the swap leaves it empty.
   */
  async function listing(dir: string): Promise<string[]> {
    const entries = await fs.readdir(dir, {recursive: true, withFileTypes: true})
    const lines: string[] = []
    for (const entry of entries) {
      const full = path.join(entry.parentPath, entry.name)
      const relative = path.relative(dir, full)
      if (relative.startsWith(STAGING_PREFIX)) continue
      lines.push(`${relative} ${entry.isDirectory() ? '-' : (await fs.stat(full)).size}`)
    }

    return lines.sort()
  }

  /** Whether PostgreSQL starts on `dir` (then stopped at once). */
  async function startsOn(dir: string): Promise<boolean> {
    try {
      const server = await startRestoredServer(cluster, dir)
      await server.stop()
      return true
    } catch {
      const [file, argv] = asServerUser(path.join(cluster.binDir, 'pg_ctl'), ['-D', dir, '-m', 'immediate', 'stop'])
      await run(file, argv).catch(() => {})
      return false
    }
  }

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-base-crash-store-')
    workDir = await makeServerOwnedDir('dbb-base-crash-')
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
    await cluster.psql('CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 2000) g')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...cluster.dbbEnv(), ...env()})
    expect([backup.code, backup.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    await cluster.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(2001, 2500) g')
    await switchWalAndWaitArchived(cluster, storeDir)

    // The old cluster: a whole one (this one, stopped), plus a marker and many files to remove.
    await cluster.stop()
    template = path.join(workDir, 'template')
    await run('cp', ['-a', cluster.dataDir, template])
    await cluster.start()
    await fs.writeFile(path.join(template, MARKER), 'old')
    await fs.mkdir(path.join(template, 'old_bulk'))
    for (let n = 0; n < OLD_FILES; n++) await fs.writeFile(path.join(template, 'old_bulk', `f${n}`), 'x'.repeat(n % 64))
    await run('chown', ['-R', '--reference', cluster.dataDir, template]).catch(() => {})
    oldListing = await listing(template)

    pgdata = path.join(workDir, 'pgdata')
    await run('cp', ['-a', template, pgdata])
    const clean = await runWithKill(args(), env())
    expect([clean.code, clean.code === 0 ? '' : clean.stderr]).toEqual([0, ''])
    cleanMs = clean.durationMs
    phases = phaseEvents(clean)
    newListing = await listing(pgdata)
  }, 300_000)

  afterAll(async () => {
    await cluster?.destroy()
    for (const dir of [storeDir, workDir]) if (dir) await fs.rm(dir, {recursive: true, force: true})
  })

  it('a clean restore logs the phases of its swap (the kill points below)', () => {
    expect(phases).toEqual(expect.arrayContaining(['restore.started', 'restore.staged', 'restore.old_unstartable', 'restore.swapped', 'restore.succeeded']))
  })

  it('killed at every phase boundary and at seeded delays: old, restored, or unstartable — never a cluster PostgreSQL starts in any other state; the next restore succeeds', async () => {
    const random = seededRandom(CRASH_SEED + 20)
    const points: KillPoint[] = [
      ...phases.filter((event) => event !== 'restore.succeeded').map((event) => ({label: `at ${event}`, event})),
      ...Array.from({length: RANDOM_POINTS}, () => Math.round((0.2 + 0.8 * random()) * cleanMs)).map((afterMs) => ({label: `after ${afterMs} ms (seed ${CRASH_SEED + 20})`, afterMs})),
    ]
    const broken: string[] = []
    const outcomes: string[] = []
    let unstartableProven = false
    for (const point of points) {
      await fs.rm(pgdata, {recursive: true, force: true})
      await run('cp', ['-a', template, pgdata])
      const killed = await runWithKill(args(), env(), point)
      const now = await listing(pgdata)
      const control = existsSync(path.join(pgdata, 'global', 'pg_control'))
      let state: string
      if (JSON.stringify(now) === JSON.stringify(oldListing)) state = 'old'
      else if (JSON.stringify(now) === JSON.stringify(newListing)) state = 'restored'
      else if (!control) state = 'unstartable'
      else state = 'broken'
      outcomes.push(`${point.label}: ${killed.killed ? 'killed' : `exit ${killed.code}`}, ${state}`)
      if (state === 'broken') broken.push(`${point.label}: global/pg_control is there but the directory is neither the old cluster nor the restored one`)
      if (state === 'restored' && !(await fs.readFile(path.join(pgdata, 'postgresql.auto.conf'), 'utf8')).includes('restore_command')) broken.push(`${point.label}: restored without restore_command`)
      if (state === 'unstartable' && !unstartableProven) {
        // Once, with the real server: it refuses such a directory.
        if (await startsOn(pgdata)) broken.push(`${point.label}: PostgreSQL started on a directory without global/pg_control`)
        unstartableProven = true
      }

      if (state === 'unstartable') {
        const refused = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', pgdata], env())
        if (refused.code !== 2 || !/interrupted dbb restore/.test(refused.stderr)) broken.push(`${point.label}: without --force: exit ${refused.code}, ${refused.stderr.slice(-200)}`)
      }

      const next = await runCli(args(), env())
      if (next.code !== 0) broken.push(`${point.label}: the next restore failed (${next.code}): ${next.stderr.slice(-300)}`)
      else if (JSON.stringify(await listing(pgdata)) !== JSON.stringify(newListing)) broken.push(`${point.label}: the next restore succeeded but the directory differs from a clean restore`)
    }

    // The moment the backup's pg_control appears in --pgdata (a new inode under the old name),
    // watched for and frozen with SIGSTOP before the SIGKILL: PostgreSQL can start from then on, so
    // the restored cluster must be whole then, recovery settings included.
    for (let round = 0; round < 3; round++) {
      await fs.rm(pgdata, {recursive: true, force: true})
      await run('cp', ['-a', template, pgdata])
      const control = path.join(pgdata, 'global', 'pg_control')
      const oldInode = statSync(control).ino
      const child = startCli(args(), env())
      const exited = new Promise<number | null>((resolve) => child.once('close', resolve))
      let caught = false
      const until = Date.now() + 60_000
      while (Date.now() < until && child.exitCode === null) {
        const inode = statSync(control, {throwIfNoEntry: false})?.ino
        if (inode !== undefined && inode !== oldInode) {
          child.kill('SIGSTOP')
          caught = true
          break
        }

        await new Promise((resolve) => setImmediate(resolve))
      }

      child.kill('SIGKILL')
      await exited
      const now = await listing(pgdata)
      const label = `round ${round + 1}, frozen when the backup's pg_control appeared (${caught ? 'caught' : 'not caught'})`
      outcomes.push(label)
      if (caught && JSON.stringify(now) !== JSON.stringify(newListing)) broken.push(`${label}: PostgreSQL could start, but the directory is not the whole restored cluster: ${now.filter((line) => !newListing.includes(line)).slice(0, 5).join('; ')} / missing ${newListing.filter((line) => !now.includes(line)).slice(0, 5).join('; ')}`)
      const next = await runCli(args(), env())
      if (next.code !== 0) broken.push(`${label}: the next restore failed (${next.code}): ${next.stderr.slice(-300)}`)
    }

    expect(broken).toEqual([])
    // The matrix reached the swap: a kill left the directory unstartable, and a freeze caught the pivot.
    expect(outcomes.filter((outcome) => outcome.endsWith('unstartable')).length).toBeGreaterThan(0)
    expect(outcomes.filter((outcome) => outcome.endsWith('(caught)')).length).toBeGreaterThan(0)

    // The directory the last restore left is a cluster PostgreSQL recovers: it replays the archive and promotes.
    const server = await startRestoredServer(cluster, pgdata)
    try {
      await waitFor('the end of recovery', async () => ((await server.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f' ? true : undefined), 180_000)
      expect(await server.psql('SELECT count(*) FROM orders')).toBe('2500')
    } finally {
      await server.stop()
    }
  }, 900_000)

  // Last: it adds a base backup, which becomes `latest` for anything after it.
  it('the staging directory a kill before the swap leaves beside the old cluster is not carried into base backups of that cluster, started again', async () => {
    // What a restore killed before its swap leaves (the same function makes it), in a cluster that runs.
    const staging = await createStagingDirectory(cluster.dataDir)
    try {
      await fs.writeFile(path.join(staging, 'PG_VERSION'), 'partly extracted\n')
      await run('chown', ['-R', '--reference', cluster.dataDir, staging]).catch(() => {})
      const backup = await runCli(['backup', 'run', '--type', 'base', '--no-prune', '--json'], {...cluster.dbbEnv(), ...env()})
      expect([backup.code, backup.code === 0 ? '' : backup.stderr.slice(-400)]).toEqual([0, ''])
      const {id} = JSON.parse(backup.stdout).metadata as {id: string}
      // The stored tar, as pg_basebackup streamed it (stock tools: gunzip | tar -t).
      const {stdout} = await run('sh', ['-c', `gzip -dc "$1" | tar -t`, 'sh', path.join(storeDir, id)], {maxBuffer: 64 * 1024 * 1024})
      const entries = stdout.split('\n')
      expect(entries).toContain('PG_VERSION')
      expect(entries.filter((entry) => entry.includes('dbb-restore'))).toEqual([])
    } finally {
      await fs.rm(staging, {recursive: true, force: true})
    }
  }, 300_000)
})
