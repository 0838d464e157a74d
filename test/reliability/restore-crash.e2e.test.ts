import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'
import {setTimeout as sleep} from 'node:timers/promises'
import {Client} from 'pg'

import {restoreDatabaseNames} from '../../src/restore/database'
import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {fingerprint, seedDatabase} from '../helpers/seed'
import {holdSwapBetweenRenames, prepareSwapHold} from '../helpers/hold-swap'

/**
 * Restore v2's promise under the faults a user cannot prevent: `kill -9` of dbb (the built CLI) at
 * seeded-random points of the import, inside the swap's transaction, and a storage connection cut
 * mid-stream — on local storage and on S3 (s3rver). After each: the target is exactly the old
 * database (or, only after a completed swap, exactly the backup), and the next restore succeeds
 * and drops what the killed one left.
 */

/** mulberry32: a small seeded generator, so the kill points are random but the same on every run. */
function seeded(seed: number): () => number {
  let state = seed
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

const ROWS = 150_000

describe('dbb restore: SIGKILL and cut connections never leave a half-restored target (real PostgreSQL, local and S3)', () => {
  let cluster: PgCluster
  let s3: S3Server
  let localDir: string
  let backedUp: Record<string, string>
  const random = seeded(20261202)

  const localEnv = () => ({...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: localDir})
  const s3Env = (endpoint?: string) => ({...cluster.dbbEnv('shop'), ...s3.dbbEnv({S3_PREFIX: 'crash'}, endpoint)})
  const dbbDatabases = async () =>
    (await cluster.psql(`SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database WHERE datname LIKE '%\\_dbb\\_%'`)).split(',').filter(Boolean)
  /** The contents without the serial probe (fingerprint() draws one value from the sequence). */
  const contents = async () => {
    const {serial: _serial, ...rest} = await fingerprint(cluster, 'shop')
    return rest
  }

  /** Makes "shop" differ from the backup, and returns its contents: "old" for the next restore. */
  async function changeShop(): Promise<Record<string, string>> {
    await cluster.psql(`INSERT INTO customers (name) VALUES ('changed after backup'); DELETE FROM events WHERE id <= 500`, 'shop')
    return contents()
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    s3 = await startS3Server()
    await seedDatabase(cluster, 'shop', ROWS)
    localDir = await tempDir()
    for (const env of [localEnv(), s3Env()]) {
      const backup = await runCli(['backup', 'run', '--json', '--no-prune'], env)
      expect([backup.code, backup.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    }

    const {serial: _serial, ...rest} = await fingerprint(cluster, 'shop')
    backedUp = rest
  }, 300_000)

  afterAll(async () => {
    await s3?.destroy()
    await cluster?.destroy()
    await fs.rm(localDir, {recursive: true, force: true})
  })

  /** Starts `dbb restore latest --force` and resolves with it once it has reached `event` (a JSON log line). */
  async function restoreUntil(env: Record<string, string>, event: string): Promise<{child: ChildProcess; done: Promise<unknown>}> {
    const child = startCli(['restore', 'latest', '--force', '--json'], env)
    let stderr = ''
    let resolveReached: () => void
    const reached = new Promise<void>((resolve) => (resolveReached = resolve))
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      stderr += text
      if (stderr.includes(`"event":"${event}"`)) resolveReached()
    })
    const done = new Promise((resolve) => child.on('close', resolve))
    await Promise.race([reached, done])
    return {child, done}
  }

  /** After a kill: the target is old or new, never in between; then the next restore succeeds, cleans up and restores the backup. */
  async function expectOldOrNewThenRecovery(env: Record<string, string>, old: Record<string, string>): Promise<'old' | 'new'> {
    const now = await contents()
    expect([old, backedUp]).toContainEqual(now)
    const next = await runCli(['restore', 'latest', '--force', '--json'], env)
    expect([next.code, next.stderr.slice(-600)]).toEqual([0, expect.any(String)])
    expect(await dbbDatabases()).toEqual([])
    expect(await contents()).toEqual(backedUp)
    return JSON.stringify(now) === JSON.stringify(old) ? 'old' : 'new'
  }

  for (const where of ['local', 's3'] as const) {
    it(`${where}: SIGKILL at seeded-random points of the import, and the next restore cleans up`, async () => {
      const env = where === 'local' ? localEnv() : s3Env()
      const outcomes: string[] = []
      for (let round = 0; round < 3; round++) {
        const old = await changeShop()
        const delayMs = Math.floor(random() * 2500)
        const {child, done} = await restoreUntil(env, 'restore.staged')
        await sleep(delayMs)
        child.kill('SIGKILL')
        await done
        outcomes.push(`${delayMs} ms: ${await expectOldOrNewThenRecovery(env, old)}`)
      }

      // For the record in the test output: which kills landed before and after the swap.
      expect(outcomes).toHaveLength(3)
    }, 300_000)
  }

  it('local: SIGKILL inside the swap transaction (between its two renames) leaves exactly the old database', async () => {
    const old = await changeShop()
    const {staging} = restoreDatabaseNames('shop')
    await prepareSwapHold(cluster, 'shop')
    const {child, done} = await restoreUntil(localEnv(), 'restore.staged')
    const hold = await holdSwapBetweenRenames(cluster, staging)
    try {
      child.kill('SIGKILL')
      await done
    } finally {
      await hold.release()
    }

    expect(await expectOldOrNewThenRecovery(localEnv(), old)).toBe('old')
  }, 300_000)

  it('S3: the storage connection cut mid-stream is reported as such (not "Error: aborted"); the target is unchanged', async () => {
    const old = await changeShop()
    const proxy = await startRecordingProxy(() => s3.port)
    proxy.inject({match: (request) => request.method === 'GET' && /\.sql\.gz(\?|$)/.test(request.url), kind: 'cut', afterBytes: 256 * 1024, times: 5})
    try {
      const result = await runCli(['restore', 'latest', '--force'], s3Env(proxy.endpoint))
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/the connection to storage was lost after \d+ bytes reading backup_\S+\.sql\.gz/)
      expect(result.stderr).toMatch(/database "shop" was not changed/)
      expect(result.stderr).not.toMatch(/Error: aborted\s*$/m)
      expect(proxy.requests.some((request) => request.method === 'GET' && /\.sql\.gz/.test(request.url) && request.status === 0)).toBe(true)
    } finally {
      await proxy.close()
    }

    expect(await contents()).toEqual(old)
    expect(await dbbDatabases()).toEqual([])
    expect(await expectOldOrNewThenRecovery(s3Env(), old)).toBe('old')
  }, 300_000)

  it('leftovers: a marked replaced database is dropped and listed; one only named like dbb\'s is kept and named', async () => {
    const {replaced, staging} = restoreDatabaseNames('shop')
    const marker = JSON.stringify({kind: 'replaced', target: 'shop', backupId: 'backup_x.sql.gz', startedAt: '2026-12-02T00:00:00.000Z', pid: 1})
    await cluster.psql(`CREATE DATABASE "${replaced}"`)
    await cluster.psql(`COMMENT ON DATABASE "${replaced}" IS 'dbb-restore-leftover ${marker}'`)
    await cluster.psql(`CREATE DATABASE "other_dbb_staging_00000000"`)
    const result = await runCli(['restore', 'latest', '--force', '--json'], localEnv())
    expect([result.code, result.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    expect(JSON.parse(result.stdout).cleanedLeftovers).toEqual([replaced])
    expect(result.stderr).toContain('other_dbb_staging_00000000')
    expect(await dbbDatabases()).toEqual(['other_dbb_staging_00000000'])
    await cluster.psql(`DROP DATABASE "other_dbb_staging_00000000"`)

    // A database with this restore's own staging name but no marker: refused, never dropped.
    await cluster.psql(`CREATE DATABASE "${staging}"`)
    const refused = await runCli(['restore', 'latest', '--force'], localEnv())
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(`database "${staging}" exists but is not a staging database dbb can prove it made`)
    await cluster.psql(`DROP DATABASE "${staging}"`)
  }, 300_000)

  it('the application keeps reading the old data during the import; its session is terminated only at the swap', async () => {
    await changeShop()
    const app = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'shop'})
    app.on('error', () => {})
    await app.connect()
    await app.query('BEGIN')
    await app.query('LOCK TABLE customers IN ACCESS SHARE MODE')
    const child = startCli(['restore', 'latest', '--force', '--json'], localEnv())
    const result = collect(child)
    let readsDuringImport = 0
    let stillRunning = true
    void result.then(() => (stillRunning = false))
    while (stillRunning) {
      const read = await app.query(`SELECT count(*) AS n FROM customers WHERE name = 'changed after backup'`).catch(() => undefined)
      if (!read) break
      expect(Number(read.rows[0].n)).toBeGreaterThan(0)
      readsDuringImport++
      await sleep(50)
    }

    const done = await result
    expect([done.code, done.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    expect(readsDuringImport).toBeGreaterThan(3)
    expect(JSON.parse(done.stdout).terminatedSessions).toBeGreaterThanOrEqual(1)
    await app.end().catch(() => {})
    expect(await contents()).toEqual(backedUp)
  }, 300_000)

  it('clients reconnecting in a tight loop during the swap do not make it fail (they see the old data, then the restored data)', async () => {
    await changeShop()
    const seen = new Set<string>()
    let running = true
    const reconnecting = (async () => {
      while (running) {
        const client = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'shop'})
        client.on('error', () => {})
        try {
          await client.connect()
          const {rows} = await client.query(`SELECT count(*) AS n FROM customers WHERE name = 'changed after backup'`)
          seen.add(Number(rows[0].n) > 0 ? 'old' : 'new')
        } catch {
          seen.add('refused or terminated')
        } finally {
          await client.end().catch(() => {})
        }
      }
    })()
    const result = await runCli(['restore', 'latest', '--force', '--json'], localEnv())
    await sleep(300)
    running = false
    await reconnecting
    expect([result.code, result.stderr.slice(-600)]).toEqual([0, expect.any(String)])
    expect(seen).toContain('old')
    expect(seen).toContain('new')
    expect(await contents()).toEqual(backedUp)
    expect(await dbbDatabases()).toEqual([])
  }, 300_000)
})

/** An HTTP proxy to the S3 server that cuts the connection of every dump GET after `afterBytes` of its body. */
