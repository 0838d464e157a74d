import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {CRASH_SEED, KillPoint, phaseEvents, runWithKill, seededRandom} from '../helpers/crash-harness'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

/**
 * The crash-point matrix for `dbb restore --force` (issue 11): SIGKILL the restore at every phase
 * boundary a clean restore logs and after seeded random delays. Invariant after every kill: the
 * target database holds exactly its old rows or exactly the backup's rows — never a dropped,
 * empty or half-imported database — and the next `dbb restore` succeeds.
 *
 * The kill points come from a clean run's log (not a fixed list), so the matrix follows the
 * restore's phases as they change. On a restore that drops the target before importing into it,
 * this fails at every kill between the drop and the commit: that is what the staging-database +
 * atomic-swap restore fixes.
 *
 * Run on a plain backup and on one encrypted with age (the restore then decrypts through the `age`
 * program as it imports, with AGE_IDENTITY_FILE): the same invariants, whatever the kill hits.
 */
const ROWS = 60_000
const RANDOM_POINTS = Number(process.env.CRASH_RANDOM_POINTS ?? 2)

describe.each([
  ['a plain backup', false],
  ['a backup encrypted with age', true],
])('crash-point matrix: restore of %s (real PostgreSQL, local storage)', (_label, encrypted) => {
  let cluster: PgCluster
  let storeDir: string
  let encryption: Record<string, string> = {}
  let backupId: string
  let backupRows: Record<string, string>
  let oldRows: Record<string, string>
  let cleanMs = 0
  let phases: string[] = []

  const env = () => ({...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: storeDir, ...encryption})
  /** The target's state before each kill: the backup's rows, changed the same way every time. */
  const diverge = () => cluster.psql(`DELETE FROM events WHERE id > 1000; UPDATE customers SET name = name || ' (changed)'; INSERT INTO events VALUES (-1, 'after the backup', 0, '2026-06-01T00:00:00Z')`, 'shop')
  /** The rows, sequence and view; without `serial`, which the fingerprint reads with nextval() and so advances. */
  const rowsNow = async (): Promise<Record<string, string>> => {
    try {
      const {serial: _advanced, ...rows} = await fingerprint(cluster, 'shop')
      return rows
    } catch (error) {
      return {unreadable: (error as Error).message.split('\n')[0]}
    }
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    storeDir = await tempDir('dbb-crash-restore-')
    if (encrypted) {
      const identity = path.join(storeDir, '..', `${path.basename(storeDir)}-key.txt`)
      execFileSync('age-keygen', ['-o', identity], {stdio: 'ignore'})
      encryption = {ENCRYPTION_RECIPIENTS: execFileSync('age-keygen', ['-y', identity], {encoding: 'utf8'}).trim(), AGE_IDENTITY_FILE: identity}
    }

    await seedDatabase(cluster, 'shop', ROWS)
    const backup = await runCli(['backup', 'run', '--json'], env())
    expect(backup.code).toBe(0)
    backupId = JSON.parse(backup.stdout).metadata.id
    expect(backupId.endsWith('.age')).toBe(encrypted)
    backupRows = await rowsNow()
    await diverge()
    oldRows = await rowsNow()
    expect(oldRows).not.toEqual(backupRows)

    const clean = await runWithKill(['restore', backupId, '--force'], env())
    expect([clean.code, clean.code === 0 ? '' : clean.stderr]).toEqual([0, ''])
    expect(await rowsNow()).toEqual(backupRows)
    cleanMs = clean.durationMs
    phases = phaseEvents(clean)
    await diverge()
  }, 600_000)

  afterAll(async () => {
    await cluster?.destroy()
    if (storeDir) await fs.rm(storeDir, {recursive: true, force: true})
    if (encryption.AGE_IDENTITY_FILE) await fs.rm(encryption.AGE_IDENTITY_FILE, {force: true})
  })

  it('a clean restore logs its phase boundaries (the kill points below)', () => {
    expect(phases).toEqual(expect.arrayContaining(['restore.started', 'restore.succeeded']))
    expect(phases.length).toBeGreaterThanOrEqual(4)
  })

  /**
   * One test over every kill point, so the points can follow the phases a clean run logs; a
   * failure lists every point at which the invariant broke.
   */
  it('restore --force killed at every phase boundary and at seeded delays: the target holds its old rows or the backup’s, never anything else; the next restore succeeds', async () => {
    const random = seededRandom(CRASH_SEED + 10)
    const points: KillPoint[] = [
      ...phases.filter((event) => event !== 'restore.succeeded').map((event) => ({label: `at ${event}`, event})),
      ...Array.from({length: RANDOM_POINTS}, () => 0.3 + 0.7 * random()).map((fraction) => ({
        label: `after ${Math.round(fraction * 100)}% of a clean restore (seed ${CRASH_SEED + 10})`,
        afterMs: Math.round(fraction * cleanMs),
      })),
    ]
    const broken: string[] = []
    for (const point of points) {
      const run = await runWithKill(['restore', backupId, '--force'], env(), point)
      if (point.event && !run.killed) broken.push(`${point.label}: the restore ended (exit ${run.code}) before the event`)
      const after = await rowsNow()
      const state = JSON.stringify(after) === JSON.stringify(oldRows) ? 'old' : JSON.stringify(after) === JSON.stringify(backupRows) ? 'backup' : 'other'
      if (state === 'other') broken.push(`${point.label}: the target holds neither its old rows nor the backup's: ${JSON.stringify(after).slice(0, 160)}`)

      const next = await runCli(['restore', backupId, '--force'], env())
      if (next.code !== 0) broken.push(`${point.label}: the next restore failed (${next.code}): ${next.stderr.slice(-300)}`)
      else if (JSON.stringify(await rowsNow()) !== JSON.stringify(backupRows)) broken.push(`${point.label}: the next restore succeeded but the rows differ from the backup`)
      await diverge().catch((error: Error) => broken.push(`${point.label}: could not reset the target: ${error.message}`))
    }

    expect(broken).toEqual([])
  }, 600_000)
})
