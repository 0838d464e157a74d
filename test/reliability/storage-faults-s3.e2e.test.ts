import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {STAGING_PREFIX} from '../../src/restore/recovery-config'
import {runCli, tempDir} from '../helpers/cli'
import {CrashRun, runWithKill} from '../helpers/crash-harness'
import {ArchiveModel, CODECS, checkArchive, expectNoLeftovers, s3Store, segmentName, sha, writeOldBackup, writeSourceSegment} from '../helpers/crash-invariants'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {FaultKind, InjectedFailure, KINDS, RecordingProxy, faultAt, startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {fingerprint, seedDatabase} from '../helpers/seed'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

/**
 * The storage-fault matrix (issue 11) on S3: for `backup run`, `restore` (logical and base),
 * `prune`, `wal push` and `wal fetch`, a clean run through the recording proxy counts the requests
 * N the command makes; then for every request index i in 1..N the command runs again with a fault
 * injected at request i: `500`, `reset` or `stall` (faultAt, test/helpers/recording-proxy.ts).
 * Each run must end by itself (never hang) and either succeed or fail with its documented exit
 * code, and the archive invariants (test/helpers/crash-invariants.ts) must hold afterwards. After
 * each command's matrix, a clean run succeeds and a prune past ORPHAN_GRACE leaves nothing behind.
 * Each case starts from the same storage state (the matrix resets it), so index i names the same
 * request in every case.
 */
const RUN_TIMEOUT_MS = 120_000

interface Outcome {
  index: number
  kind: FaultKind
  code: number | null
  hung: boolean
  stderr: string
}

describe('storage-fault matrix: S3 (every request index × 500 / reset / stall)', () => {
  let cluster: PgCluster
  let s3: S3Server
  let workDir: string
  const proxies: RecordingProxy[] = []
  /** wal fetch exit codes under faults, for the restore_command contract test below. */
  const fetchOutcomes: Outcome[] = []

  beforeAll(async () => {
    ;[cluster, s3] = await Promise.all([startPostgres(), startS3Server()])
    await seedDatabase(cluster, 'shop', 2000)
    workDir = await tempDir('dbb-faults-matrix-')
  }, 120_000)

  afterAll(async () => {
    await Promise.all(proxies.map((proxy) => proxy.close()))
    await Promise.all([cluster?.destroy(), s3?.destroy()])
    if (workDir) await fs.rm(workDir, {recursive: true, force: true})
  })

  async function viaProxy(args: string[], env: (endpoint: string) => Record<string, string>, fault?: InjectedFailure): Promise<{run: CrashRun; requests: number}> {
    const proxy = await startRecordingProxy(() => s3.port)
    proxies.push(proxy)
    if (fault) proxy.inject(fault)
    try {
      const run = await runWithKill(args, env(proxy.endpoint), undefined, RUN_TIMEOUT_MS)
      return {run, requests: proxy.requests.length}
    } finally {
      await proxy.close()
    }
  }

  /**
   * Runs the matrix for one command: `prepare` resets storage to the same state before each case;
   * `judge` adds the command's own checks. Returns every outcome; problems fail the test together.
   */
  async function runMatrix(
    command: string,
    model: ArchiveModel,
    args: () => string[],
    env: (endpoint: string) => Record<string, string>,
    hooks: {prepare?: () => Promise<void>; judge?: (outcome: Outcome, run: CrashRun) => Promise<string | undefined>; reset?: () => Promise<void>; allowedFailureCodes: number[]; kinds?: FaultKind[]},
  ): Promise<Outcome[]> {
    await hooks.prepare?.()
    const clean = await viaProxy(args(), env)
    expect([command, 'clean run', clean.run.code, clean.run.code === 0 ? '' : clean.run.stderr]).toEqual([command, 'clean run', 0, ''])
    await hooks.reset?.()
    const total = clean.requests
    expect(total).toBeGreaterThan(0)

    const outcomes: Outcome[] = []
    const problems: string[] = []
    for (let index = 1; index <= total; index++) {
      for (const kind of hooks.kinds ?? KINDS) {
        await hooks.prepare?.()
        const {run} = await viaProxy(args(), env, faultAt(index, kind))
        const hung = run.killed
        const outcome: Outcome = {index, kind, code: run.code, hung, stderr: run.stderr}
        outcomes.push(outcome)
        const context = `${command}, ${kind} at request ${index}/${total}`
        if (hung) problems.push(`${context}: did not end within ${RUN_TIMEOUT_MS} ms`)
        else if (run.code !== 0 && !hooks.allowedFailureCodes.includes(run.code ?? -1)) problems.push(`${context}: exit ${run.code} (documented: 0 or ${hooks.allowedFailureCodes.join('/')})`)
        else if (run.code !== 0 && !/Error: |"error"/.test(run.stderr + run.stdout) && command !== 'wal fetch') problems.push(`${context}: exit ${run.code} without an error message`)
        const judged = await hooks.judge?.(outcome, run)
        if (judged) problems.push(`${context}: ${judged}`)
        await checkArchive(model, context, {viaCli: false})
        await hooks.reset?.()
      }
    }

    expect([command, problems]).toEqual([command, []])
    return outcomes
  }

  /** After a command's matrix: the listing through dbb holds, a clean run succeeds, and prune past the grace leaves nothing. */
  async function recovers(command: string, model: ArchiveModel, args: string[], env: Record<string, string>): Promise<void> {
    await checkArchive(model, `${command}: after the matrix`)
    const next = await runCli(args, env)
    expect([command, 'next run', next.code, next.code === 0 ? '' : next.stderr]).toEqual([command, 'next run', 0, ''])
    await new Promise((resolve) => setTimeout(resolve, 1200))
    const prune = await runCli(['prune', '--json'], {...model.store.env, ORPHAN_GRACE: '1s'})
    expect([command, 'prune', prune.code, prune.code === 0 ? '' : prune.stderr]).toEqual([command, 'prune', 0, ''])
    await expectNoLeftovers(model, `${command}: after the matrix, the next run and a prune`)
  }

  // The commands whose bytes pass through the codec (and age): each matrix for every codec. A stall
  // tests the SDK's timeout and retry, the same for every codec: run for the default one only.
  const kindsFor = (codec: (typeof CODECS)[number]): FaultKind[] => (codec === CODECS[0] ? KINDS : KINDS.filter((kind) => kind !== 'stall'))
  describe.each(CODECS)('$label', (codec) => {
    /** A store of its own and a segment of 6 MiB of incompressible bytes: a multipart upload of two parts. */
    async function walCase(prefix: string, number: number) {
      const store = s3Store(s3, `${prefix}-${CODECS.indexOf(codec)}`, {S3_PART_SIZE: '5MiB', ...codec.env(workDir)})
      const model: ArchiveModel = {store, mustSurvive: new Map(), walSources: new Map()}
      const name = segmentName(number)
      const {file, sha256} = await writeSourceSegment(workDir, name, 6 * 1024 * 1024, number)
      model.walSources.set(name, sha256)
      return {store, model, name, file, sha256}
    }

    it('backup run: each fault fails the run cleanly (exit 1) or is retried to success; nothing partial listed, no backup lost', async () => {
      const store = s3Store(s3, `m-backup-${CODECS.indexOf(codec)}`, codec.env(workDir))
      const model: ArchiveModel = {store, mustSurvive: new Map(), walSources: new Map()}
      const first = await runCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...store.env})
      expect(first.code).toBe(0)
      const initial = JSON.parse(first.stdout).metadata as {id: string; sha256: string}
      model.mustSurvive.set(initial.id, initial.sha256)
      const initialKeys = await store.keys()

      await runMatrix('backup run', model, () => ['backup', 'run', '--json'], (endpoint) => ({...cluster.dbbEnv('shop'), ...store.envVia(endpoint)}), {
        allowedFailureCodes: [1],
        kinds: kindsFor(codec),
        async judge(outcome, run) {
          if (outcome.code !== 0) return undefined
          const {metadata} = JSON.parse(run.stdout) as {metadata: {id: string; sha256: string}}
          const dump = await store.read(metadata.id).catch(() => undefined)
          return dump && sha(dump) === metadata.sha256 ? undefined : `reported success, but ${metadata.id} is not stored with sha256 ${metadata.sha256}`
        },
        // The same state for every case: only the first backup (what a case added or left is removed once checked).
        async reset() {
          for (const key of await store.keys()) if (!initialKeys.includes(key)) await store.remove(key)
        },
      })
      await recovers('backup run', model, ['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...store.env})
    }, 1_800_000)

    // Restore reads storage (the listing, the sidecar, the dump; age decrypts it for the second
    // codec) while it imports into a staging database: a fault at any request must leave the
    // target exactly as it was, or restored whole, and never a staging database behind.
    it('restore: each fault fails the restore (exit 1) or is retried; the target holds its old rows or the backup, nothing else; no staging database is left', async () => {
      const store = s3Store(s3, `m-restore-${CODECS.indexOf(codec)}`, codec.env(workDir))
      const model: ArchiveModel = {store, mustSurvive: new Map(), walSources: new Map()}
      const first = await runCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...store.env})
      expect([first.code, first.stderr.slice(-400)]).toEqual([0, expect.any(String)])
      const {metadata} = JSON.parse(first.stdout) as {metadata: {id: string; sha256: string}}
      model.mustSurvive.set(metadata.id, metadata.sha256)
      expect(metadata.id).toMatch(codec.walSuffix === '.gz' ? /\.sql\.gz$/ : /\.sql\.zst\.age$/)
      const backedUp = await fingerprint(cluster, 'shop')
      const target = `faulted_${CODECS.indexOf(codec)}`
      const restoreArgs = () => ['restore', 'latest', '--target-db', target, '--force', '--json']
      const contents = async () => {
        const marker = await cluster.psql(`SELECT to_regclass('public.marker') IS NOT NULL`, target)
        if (marker === 't') return (await cluster.psql('SELECT string_agg(v, \',\') FROM marker', target)) === 'old' ? 'old' : 'changed old rows'
        return JSON.stringify(await fingerprint(cluster, target).catch((error: Error) => error.message)) === JSON.stringify(backedUp) ? 'restored' : 'neither old nor the backup'
      }

      const stagingDatabases = async () => (await cluster.psql(`SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE '%\\_dbb\\_%'`)).split(',').filter(Boolean)

      const outcomes = await runMatrix('restore', model, restoreArgs, (endpoint) => ({...cluster.dbbEnv('shop'), ...store.envVia(endpoint)}), {
        allowedFailureCodes: [1],
        kinds: kindsFor(codec),
        async prepare() {
          await cluster.psql(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`)
          await cluster.psql(`CREATE DATABASE ${target}`)
          await cluster.psql(`CREATE TABLE marker (v text); INSERT INTO marker VALUES ('old')`, target)
        },
        async judge(outcome) {
          const now = await contents()
          const expected = outcome.code === 0 ? 'restored' : 'old'
          if (now !== expected) return `exit ${outcome.code}, but the target is ${now} (expected ${expected})`
          const left = await stagingDatabases()
          return left.length === 0 ? undefined : `left ${left.join(', ')}`
        },
      })
      // The faults reached it (measured: 500 and reset fail it at each of its 3–4 requests, a stall
      // is retried to success); each case was judged above.
      expect(outcomes.filter((outcome) => outcome.code === 1).length).toBeGreaterThan(0)
      await recovers('restore', model, restoreArgs(), {...cluster.dbbEnv('shop'), ...store.env})
      expect(await contents()).toBe('restored')
    }, 1_800_000)

    // A base backup is streamed into a staging directory inside --pgdata and replaces its contents
    // only once verified: a fault at any request leaves the directory exactly as it was.
    it('restore --type base: each fault fails it (exit 1) or is retried; --pgdata holds exactly its old files or the restored cluster, no staging directory', async () => {
      const store = s3Store(s3, `m-base-${CODECS.indexOf(codec)}`, codec.env(workDir))
      const model: ArchiveModel = {store, mustSurvive: new Map(), walSources: new Map()}
      const base = await runCli(['backup', 'run', '--type', 'base', '--json'], {...cluster.dbbEnv(), ...store.env})
      expect([base.code, base.stderr.slice(-400)]).toEqual([0, expect.any(String)])
      const {metadata} = JSON.parse(base.stdout) as {metadata: {id: string; sha256: string}}
      model.mustSurvive.set(metadata.id, metadata.sha256)
      const pgdata = path.join(workDir, `pgdata-${CODECS.indexOf(codec)}`)
      const restoreArgs = () => ['restore', '--type', 'base', 'latest', '--pgdata', pgdata, '--force', '--json']
      const version = (await fs.readFile(path.join(cluster.dataDir, 'PG_VERSION'), 'utf8')).trim()

      const outcomes = await runMatrix('restore --type base', model, restoreArgs, (endpoint) => store.envVia(endpoint), {
        allowedFailureCodes: [1],
        kinds: kindsFor(codec),
        async prepare() {
          await fs.rm(pgdata, {recursive: true, force: true})
          await fs.mkdir(pgdata, {mode: 0o700})
          await fs.writeFile(path.join(pgdata, 'marker'), 'old')
        },
        async judge(outcome) {
          const entries = (await fs.readdir(pgdata)).sort()
          if (outcome.code !== 0) {
            const old = entries.length === 1 && entries[0] === 'marker' && (await fs.readFile(path.join(pgdata, 'marker'), 'utf8')) === 'old'
            return old ? undefined : `exit ${outcome.code}, but --pgdata holds ${entries.join(', ')}`
          }

          const restored = !entries.includes('marker') && entries.includes('recovery.signal') && !entries.some((entry) => entry.startsWith(STAGING_PREFIX))
          const pgVersion = await fs.readFile(path.join(pgdata, 'PG_VERSION'), 'utf8').catch(() => '')
          return restored && pgVersion.trim() === version ? undefined : `exit 0, but --pgdata holds ${entries.join(', ')}`
        },
      })
      expect(outcomes.filter((outcome) => outcome.code === 1).length).toBeGreaterThan(0)
      await recovers('restore --type base', model, restoreArgs(), store.env)
    }, 1_800_000)

    it('wal push: each fault fails the push (exit 1, PostgreSQL retries) or is retried; no partial segment under its final name; the re-push succeeds', async () => {
      const {store, model, name, file} = await walCase('m-push', 0x200)

      await runMatrix('wal push', model, () => ['wal', 'push', file], (endpoint) => store.envVia(endpoint), {
        allowedFailureCodes: [1],
        kinds: kindsFor(codec),
        async judge(outcome) {
          if (outcome.code === 0 && !(await store.keys()).includes(`wal/${name}${codec.walSuffix}`)) return 'exit 0, but the segment is not archived'
          // archive_command is retried by PostgreSQL until it exits 0: the retry must succeed.
          const again = await runCli(['wal', 'push', file], store.env)
          return again.code === 0 ? undefined : `the re-push failed (${again.code}): ${again.stderr}`
        },
        async reset() {
          await store.remove(`wal/${name}${codec.walSuffix}`)
        },
      })
      await recovers('wal push', model, ['wal', 'push', file], store.env)
    }, 1_800_000)

    it('wal fetch: each fault fails the fetch or is retried; the destination never holds a partial segment', async () => {
      const {store, model, name, file, sha256} = await walCase('m-fetch', 0x300)
      expect((await runCli(['wal', 'push', file], store.env)).code).toBe(0)
      const dest = path.join(workDir, 'pg_wal', 'RECOVERYXLOG')
      await fs.mkdir(path.dirname(dest), {recursive: true})

      const outcomes = await runMatrix('wal fetch', model, () => ['wal', 'fetch', name, dest], (endpoint) => store.envVia(endpoint), {
        // Any failure code passes here; which one is the restore_command contract, tested below.
        allowedFailureCodes: Array.from({length: 255}, (_, code) => code + 1),
        kinds: kindsFor(codec),
        async judge(outcome) {
          if (outcome.code === 0) {
            return existsSync(dest) && sha(await fs.readFile(dest)) === sha256 ? undefined : 'exit 0, but the destination is not the segment'
          }

          // PostgreSQL replays whatever is under the final name: after a failure, nothing may be there.
          return existsSync(dest) ? `exit ${outcome.code}, but ${dest} exists (${(await fs.stat(dest)).size} bytes)` : undefined
        },
        async reset() {
          await fs.rm(dest, {force: true})
        },
      })
      fetchOutcomes.push(...outcomes)
      await recovers('wal fetch', model, ['wal', 'fetch', name, dest], store.env)
    }, 1_800_000)
  })

  it('prune: each fault fails prune cleanly (exit 1) or is retried; the retained backup is never touched, an expired one is whole or gone', async () => {
    const store = s3Store(s3, 'm-prune')
    const model: ArchiveModel = {store, mustSurvive: new Map(), walSources: new Map()}
    const first = await runCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...store.env})
    expect(first.code).toBe(0)
    const initial = JSON.parse(first.stdout).metadata as {id: string; sha256: string}
    model.mustSurvive.set(initial.id, initial.sha256)
    const initialKeys = await store.keys()
    const expired = new Date(Date.UTC(2020, 0, 1))

    await runMatrix('prune', model, () => ['prune', '--json'], (endpoint) => store.envVia(endpoint), {
      allowedFailureCodes: [1],
      prepare: async () => {
        await writeOldBackup(store, expired)
      },
      async reset() {
        for (const key of await store.keys()) if (!initialKeys.includes(key)) await store.remove(key)
      },
    })
    await writeOldBackup(store, expired)
    await recovers('prune', model, ['prune', '--json'], store.env)
  }, 1_800_000)

  /**
   * The restore_command contract: PostgreSQL reads exit 1–125 as "not in the archive" and ends
   * recovery there (promoting a server that silently lacks every later transaction); only a clean
   * "no such object" may exit 1, every other failure must exit above 125. Fails until the wal-fetch
   * exit-code fix (issue 11, hole 4) is merged: today every error exits 1.
   */
  it('wal fetch contract: every storage fault that fails the fetch exits above 125, never 1–125 ("not in archive")', () => {
    expect(fetchOutcomes.length).toBeGreaterThan(0)
    const failed = fetchOutcomes.filter((outcome) => outcome.code !== 0)
    expect(failed.length).toBeGreaterThan(0)
    const misread = failed.filter((outcome) => outcome.code === null || outcome.code <= 125).map((outcome) => `${outcome.kind} at request ${outcome.index}: exit ${outcome.code}`)
    expect(misread).toEqual([])
  })
})
