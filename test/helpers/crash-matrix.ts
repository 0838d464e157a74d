import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from './cli'
import {CRASH_SEED, CrashRun, KillPoint, phaseEvents, runWithKill, seededRandom} from './crash-harness'
import {ArchiveModel, TestStore, checkArchive, expectNoLeftovers, segmentName, sha, writeOldBackup, writeSourceSegment} from './crash-invariants'
import {PgCluster, startPostgres} from './postgres'
import {seedDatabase} from './seed'

/**
 * The crash-point matrix (issue 11) for one storage backend: `backup run`, `prune`, `wal push`
 * and `wal fetch` are each SIGKILLed at every phase boundary a clean run logs and after a few
 * seeded random delays; after every kill the archive invariants hold (test/helpers/crash-invariants.ts)
 * and the next run succeeds and — once the killed process is gone and ORPHAN_GRACE has passed —
 * leaves nothing behind. Restore has its own file (test/reliability/crash-restore.e2e.test.ts).
 */
export interface MatrixBackend {
  store: TestStore
  destroy(): Promise<void>
}

/** The phase boundaries each command must log (debug level); a kill lands at each. */
export const PHASES = {
  backup: ['backup.started', 'backup.stored', 'backup.verified', 'backup.succeeded', 'backup.claim_released'],
  prune: ['prune.sidecar_deleted', 'prune.deleted', 'prune.orphan'],
  push: ['wal.push_uploading', 'wal.pushed'],
  fetch: ['wal.fetch_written', 'wal.fetched'],
} as const

type Command = keyof typeof PHASES

export const RANDOM_POINTS = Number(process.env.CRASH_RANDOM_POINTS ?? 2)
/** Enough rows that pg_dump's stream takes about a second: random kills land mid-stream. */
const ROWS = 150_000
const SEGMENT_BYTES = 6 * 1024 * 1024
const GRACE_PASSED_MS = 1200
/** A case is 3–5 CLI runs (≈ 10 s on a quiet machine); generous, so a loaded machine is slow rather than failing. */
const CASE_TIMEOUT_MS = 600_000

const commandSeed = (command: Command) => CRASH_SEED + ['backup', 'prune', 'push', 'fetch'].indexOf(command)

/** Kill points of one command: each phase boundary, then seeded fractions of a clean run's duration. */
function pointsFor(command: Command): {label: string; point: (cleanMs: number) => KillPoint}[] {
  const random = seededRandom(commandSeed(command))
  const fractions = Array.from({length: RANDOM_POINTS}, () => 0.3 + 0.7 * random())
  return [
    ...PHASES[command].map((event) => ({label: `at ${event}`, point: () => ({label: event, event})})),
    ...fractions.map((fraction) => ({
      label: `after ${Math.round(fraction * 100)}% of a clean run (seed ${commandSeed(command)})`,
      point: (cleanMs: number) => ({label: `${fraction}`, afterMs: Math.round(fraction * cleanMs)}),
    })),
  ]
}

export function describeCrashMatrix(name: string, createBackend: () => Promise<MatrixBackend>): void {
  describe(`crash-point matrix: ${name}`, () => {
    let cluster: PgCluster
    let backend: MatrixBackend
    let model: ArchiveModel
    let workDir: string
    const cleanMs = {} as Record<Command, number>
    const cleanPhases = {} as Record<Command, string[]>
    let segmentNumber = 0x100
    let oldBackupDay = 0

    const dbEnv = () => ({...cluster.dbbEnv('shop'), ...backend.store.env})
    /** Everything listed was verified whole: from now on it must survive every kill. */
    const keep = (listed: {id: string; sha256: string}[], except: Set<string> = new Set()) => {
      for (const backup of listed) if (!except.has(backup.id)) model.mustSurvive.set(backup.id, backup.sha256)
    }

    async function newSegment(): Promise<{name: string; file: string}> {
      const segment = segmentName(segmentNumber++)
      const {file, sha256} = await writeSourceSegment(workDir, segment, SEGMENT_BYTES, segmentNumber)
      model.walSources.set(segment, sha256)
      return {name: segment, file}
    }

    async function nextBackupSucceeds(context: string, extraEnv: Record<string, string> = {}): Promise<void> {
      const next = await runCli(['backup', 'run', '--json'], {...dbEnv(), ...extraEnv})
      expect([context, 'next backup run', next.code, next.code === 0 ? '' : next.stderr]).toEqual([context, 'next backup run', 0, ''])
      const {metadata} = JSON.parse(next.stdout) as {metadata: {id: string; sha256: string}}
      model.mustSurvive.set(metadata.id, metadata.sha256)
    }

    async function pruneAfterGrace(context: string): Promise<void> {
      await new Promise((resolve) => setTimeout(resolve, GRACE_PASSED_MS))
      const prune = await runCli(['prune', '--json'], {...backend.store.env, ORPHAN_GRACE: '1s'})
      expect([context, 'prune after ORPHAN_GRACE', prune.code, prune.code === 0 ? '' : prune.stderr]).toEqual([context, 'prune after ORPHAN_GRACE', 0, ''])
    }

    beforeAll(async () => {
      ;[cluster, backend] = await Promise.all([startPostgres(), createBackend()])
      await seedDatabase(cluster, 'shop', ROWS)
      workDir = await tempDir('dbb-crash-')
      model = {store: backend.store, mustSurvive: new Map(), walSources: new Map()}

      // Clean runs: the phases each command logs, and how long it takes undisturbed.
      const clean = async (command: Command, run: () => Promise<CrashRun>) => {
        const result = await run()
        expect([command, result.code, result.code === 0 ? '' : result.stderr]).toEqual([command, 0, ''])
        cleanMs[command] = result.durationMs
        cleanPhases[command] = phaseEvents(result)
        return result
      }

      await clean('backup', () => runWithKill(['backup', 'run', '--json'], dbEnv()))
      keep((await checkArchive(model, 'after clean runs')).listed)
      await writeOldBackup(model.store, new Date(Date.UTC(2020, 0, 1)))
      await plantOrphan(model.store)
      await clean('prune', () => runWithKill(['prune', '--json'], {...backend.store.env, ORPHAN_GRACE: '1s'}))
      const pushed = await newSegment()
      await clean('push', () => runWithKill(['wal', 'push', pushed.file], backend.store.env))
      await clean('fetch', () => runWithKill(['wal', 'fetch', pushed.name, path.join(workDir, 'RECOVERYXLOG')], backend.store.env))
      await expectNoLeftovers(model, 'after clean runs')
    }, 600_000)

    afterAll(async () => {
      await Promise.all([cluster?.destroy(), backend?.destroy()])
      if (workDir) await fs.rm(workDir, {recursive: true, force: true})
    })

    it('every command logs the phase boundaries the matrix kills at', () => {
      for (const command of Object.keys(PHASES) as Command[]) {
        expect([command, cleanPhases[command]]).toEqual([command, expect.arrayContaining([...PHASES[command]])])
      }
    })

    it.each(pointsFor('backup'))('backup run killed $label: nothing partial listed, no backup lost, the next run succeeds and leaves nothing', async ({label, point}) => {
      const context = `backup run killed ${label}`
      const kill = point(cleanMs.backup)
      const run = await runWithKill(['backup', 'run', '--json'], dbEnv(), kill)
      if (kill.event) expect([context, run.killed]).toEqual([context, true])
      if (!run.killed) expect([context, run.code, run.stderr]).toEqual([context, 0, expect.any(String)])
      keep((await checkArchive(model, context)).listed)

      await new Promise((resolve) => setTimeout(resolve, GRACE_PASSED_MS))
      // The next scheduled backup: its own retention pass (ORPHAN_GRACE=1s) sweeps what the kill left.
      await nextBackupSucceeds(context, {ORPHAN_GRACE: '1s'})
      await expectNoLeftovers(model, context, {viaCli: false})
    }, CASE_TIMEOUT_MS)

    it.each(pointsFor('prune'))('prune killed $label: no retained backup touched, nothing half-deleted listed, the next prune finishes the job', async ({label, point}) => {
      const context = `prune killed ${label}`
      oldBackupDay += 1
      const expiring = new Set([
        (await writeOldBackup(model.store, new Date(Date.UTC(2020, 1, oldBackupDay)))).id,
        (await writeOldBackup(model.store, new Date(Date.UTC(2020, 1, oldBackupDay, 12)))).id,
      ])
      await plantOrphan(model.store)
      await new Promise((resolve) => setTimeout(resolve, GRACE_PASSED_MS))

      const run = await runWithKill(['prune', '--json'], {...backend.store.env, ORPHAN_GRACE: '1s'}, point(cleanMs.prune))
      if (point(0).event) expect([context, run.killed]).toEqual([context, true])
      if (!run.killed) expect([context, run.code, run.stderr]).toEqual([context, 0, expect.any(String)])
      keep((await checkArchive(model, context)).listed, expiring)

      await pruneAfterGrace(context)
      const after = await expectNoLeftovers(model, context, {viaCli: false})
      expect([context, after.listed.filter((backup) => expiring.has(backup.id))]).toEqual([context, []])
    }, CASE_TIMEOUT_MS)

    it.each(pointsFor('push'))('wal push killed $label: no partial segment under a final name, the re-push succeeds (idempotent)', async ({label, point}) => {
      const context = `wal push killed ${label}`
      const segment = await newSegment()
      const run = await runWithKill(['wal', 'push', segment.file], backend.store.env, point(cleanMs.push))
      if (point(0).event) expect([context, run.killed]).toEqual([context, true])
      if (!run.killed) expect([context, run.code, run.stderr]).toEqual([context, 0, expect.any(String)])
      const state = await checkArchive(model, context)

      // PostgreSQL re-runs archive_command for the same segment until it exits 0.
      const again = await runCli(['wal', 'push', segment.file], backend.store.env)
      expect([context, 're-push', again.code, again.code === 0 ? '' : again.stderr]).toEqual([context, 're-push', 0, ''])
      const {COMPRESSION, ENCRYPTION_RECIPIENTS} = backend.store.env
      const archivedKey = `wal/${segment.name}.${COMPRESSION === 'zstd' ? 'zst' : 'gz'}${ENCRYPTION_RECIPIENTS ? '.age' : ''}`
      expect([context, (await model.store.keys()).includes(archivedKey)]).toEqual([context, true])
      if (state.leftovers.length > 0) await pruneAfterGrace(context)
      await expectNoLeftovers(model, context, {viaCli: false})
    }, CASE_TIMEOUT_MS)

    it.each(pointsFor('fetch'))('wal fetch killed $label: the destination never holds a partial file, the next fetch succeeds', async ({label, point}) => {
      const context = `wal fetch killed ${label}`
      const [name, sourceSha] = [...model.walSources.entries()][0]
      const destDir = await fs.mkdtemp(path.join(workDir, 'pg_wal-'))
      const dest = path.join(destDir, 'RECOVERYXLOG')
      const run = await runWithKill(['wal', 'fetch', name, dest], backend.store.env, point(cleanMs.fetch))
      if (point(0).event) expect([context, run.killed]).toEqual([context, true])
      if (!run.killed) expect([context, run.code, run.stderr]).toEqual([context, 0, expect.any(String)])
      // Under the final name: the complete segment or nothing (PostgreSQL replays whatever is there).
      if (existsSync(dest)) expect([context, sha(await fs.readFile(dest))]).toEqual([context, sourceSha])
      await checkArchive(model, context)

      const again = await runCli(['wal', 'fetch', name, dest], backend.store.env)
      expect([context, 'next fetch', again.code, again.code === 0 ? '' : again.stderr]).toEqual([context, 'next fetch', 0, ''])
      expect([context, sha(await fs.readFile(dest))]).toEqual([context, sourceSha])
      // The killed fetch's temporary file (SIGKILL runs no handler) is gone after the next fetch.
      expect([context, await fs.readdir(destDir)]).toEqual([context, ['RECOVERYXLOG']])
    }, CASE_TIMEOUT_MS)
  })
}

/** A leftover of a crashed run (an id claim of an old backup id), for prune's orphan sweep to find. */
async function plantOrphan(store: TestStore): Promise<void> {
  await store.write(`backup_20200101T000000Z.sql.gz.${Date.now().toString(16).padStart(16, '0')}.partial`, Buffer.alloc(0))
  // Older than the 1 s ORPHAN_GRACE the prune runs use, however fast the next command starts
  // (S3 cannot backdate an object, so the leftover is made old by waiting).
  await new Promise((resolve) => setTimeout(resolve, 1500))
}
