import {ListObjectsV2Command} from '@aws-sdk/client-s3'
import * as fs from 'node:fs/promises'

import {staleAfterMs} from '../../src/backup/claim-id'
import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {lockTable, pollUntil, releaseLock, sleep, waitUntilDumpBlocked, waitUntilLocked} from '../helpers/fault-invariants'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {seedDatabase} from '../helpers/seed'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

// The killed or held writer runs with a short grace, so its claim's heartbeat is 500 ms and it is
// stale 3.5 s after its last write; the next run keeps the default ORPHAN_GRACE (24 h) and --no-prune,
// so what removes the leftovers is the start cleanup, not retention.
const WRITER_GRACE = '2s'
const WRITER_STALE_MS = staleAfterMs(500)
const PREFIX = 'shop'

/**
 * Issue 18 item 1: a backup killed mid-stream (SIGKILL, as `docker stop` past its grace or an OOM
 * kill) leaves `.partial` files and its id claim. The next `backup run` removes them at its start
 * — not ORPHAN_GRACE later — and its own backup succeeds. A writer that is alive (pg_dump held on a
 * lock for longer than the bound, so only its claim's heartbeat shows it) is never touched.
 */
describe.each(['local', 's3'] as const)('a killed run’s leftovers are removed at the next start (%s)', (backend) => {
  let cluster: PgCluster
  let s3: S3Server | undefined
  let dir: string

  const storageEnv = (): Record<string, string> => ({
    BACKUP_NAME_PREFIX: PREFIX,
    ...(backend === 's3' ? s3!.dbbEnv({S3_PREFIX: `leftovers-${dir.slice(-6)}`}) : {BACKUP_LOCAL_DIR: dir}),
  })

  /** Every key in the store (the local directory's files, or the bucket under S3_PREFIX). */
  const keys = async (): Promise<string[]> => {
    if (backend === 'local') return (await fs.readdir(dir)).sort()
    const prefix = `${storageEnv().S3_PREFIX}/`
    const listed = await s3!.client().send(new ListObjectsV2Command({Bucket: s3!.bucket, Prefix: prefix}))
    return (listed.Contents ?? []).map((object) => object.Key!.slice(prefix.length)).sort()
  }

  const listed = async () => {
    const list = await runCli(['backup', 'list', '--json'], storageEnv())
    expect(list.code).toBe(0)
    return JSON.parse(list.stdout).map((entry: {id: string; status: string}) => [entry.id, entry.status])
  }

  const removedEvents = (stderr: string) =>
    stderr
      .split('\n')
      .filter((line) => line.includes('"leftovers.removed"'))
      .map((line) => JSON.parse(line).key as string)
      .sort()

  beforeAll(async () => {
    ;[cluster, s3] = await Promise.all([startPostgres(), backend === 's3' ? startS3Server() : Promise.resolve(undefined)])
    await seedDatabase(cluster, 'shop', 2000)
    await cluster.psql('CREATE DATABASE other')
  }, 60_000)

  beforeEach(async () => {
    dir = await tempDir()
  })

  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  afterAll(async () => {
    await Promise.all([cluster?.destroy(), s3?.destroy()])
  })

  it('SIGKILL mid-backup: the next run removes the .partial files and the claim at once, and its backup is listed', async () => {
    const locker = lockTable(cluster, 'shop', 'events')
    let killed: ReturnType<typeof startCli> | undefined
    try {
      await waitUntilLocked(cluster, 'shop', 'events')
      killed = startCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...storageEnv(), ORPHAN_GRACE: WRITER_GRACE})
      const exited = collect(killed)
      await waitUntilDumpBlocked(cluster)
      await pollUntil(async () => (await keys()).some((key) => key.endsWith('.partial')), 'the claim to be written')
      killed.kill('SIGKILL')
      expect((await exited).code).toBe(null)
    } finally {
      // pg_dump, orphaned, gets the lock, writes into a closed pipe and dies.
      await releaseLock(cluster, locker)
    }

    const leftovers = await keys()
    expect(leftovers.length).toBeGreaterThan(0)
    expect(leftovers.every((key) => key.endsWith('.partial'))).toBe(true)
    expect(await listed()).toEqual([])

    // The killed writer's bound (3 missed beats of 500 ms + timestamp slack), nothing more.
    await sleep(WRITER_STALE_MS + 200)
    const next = await runCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('shop'), ...storageEnv(), LOG_FORMAT: 'json'})
    expect({code: next.code, stderr: next.code === 0 ? '' : next.stderr}).toEqual({code: 0, stderr: ''})
    expect(removedEvents(next.stderr)).toEqual(leftovers)
    const {id} = JSON.parse(next.stdout).metadata
    expect(await keys()).toEqual([id, `${id}.meta.json`])
    expect(await listed()).toEqual([[id, 'ok']])
  }, 90_000)

  it('a live writer held on a lock for longer than the bound is not touched by another run’s start; both backups complete', async () => {
    const locker = lockTable(cluster, 'shop', 'events')
    let held: ReturnType<typeof startCli> | undefined
    try {
      await waitUntilLocked(cluster, 'shop', 'events')
      held = startCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('shop'), ...storageEnv(), ORPHAN_GRACE: WRITER_GRACE})
      const heldResult = collect(held)
      await waitUntilDumpBlocked(cluster)
      // Longer than the bound since the held run first wrote: only its claim's heartbeat says it is alive.
      await sleep(WRITER_STALE_MS + 1500)
      const before = await keys()
      expect(before.some((key) => key.endsWith('.partial'))).toBe(true)

      // Another run (same prefix, another database, so its pg_dump is not blocked) starts and completes.
      const other = await runCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('other'), ...storageEnv(), LOG_FORMAT: 'json'})
      expect({code: other.code, stderr: other.code === 0 ? '' : other.stderr}).toEqual({code: 0, stderr: ''})
      expect(removedEvents(other.stderr)).toEqual([])
      const otherId = JSON.parse(other.stdout).metadata.id
      const after = await keys()
      // Every object of the held run is still there (its claim is rewritten under the same key; a
      // local store's momentary temp write of it, `<claim>.<random>.partial`, comes and goes).
      for (const key of before.filter((name) => !/\.partial\.[0-9a-f]+\.partial$/.test(name))) {
        expect([key, after.includes(key)]).toEqual([key, true])
      }

      await releaseLock(cluster, locker)
      const result = await heldResult
      expect({code: result.code, stderr: result.code === 0 ? '' : result.stderr}).toEqual({code: 0, stderr: ''})
      const heldId = JSON.parse(result.stdout).metadata.id
      expect((await listed()).sort()).toEqual([[heldId, 'ok'], [otherId, 'ok']].sort())
    } finally {
      await releaseLock(cluster, locker)
      if (held && held.exitCode === null) held.kill('SIGKILL')
    }
  }, 90_000)
})
