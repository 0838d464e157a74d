import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/serve'

/**
 * Two `dbb serve` replicas with continuous archiving (WAL_STREAMING + BASE_BACKUP_INTERVAL) against
 * one real PostgreSQL and one storage location: one base backup per slot, one pg_receivewal on the
 * slot, and the standby takes the stream over when the streaming replica dies.
 */
describe('two dbb serve replicas with WAL streaming and scheduled base backups (real PostgreSQL)', () => {
  let cluster: PgCluster
  let storeDir: string
  const running: ChildProcess[] = []
  const spools: string[] = []

  beforeAll(async () => {
    cluster = await startPostgres({settings: {archive_mode: 'off'}})
    storeDir = await tempDir('dbb-replicas-archiving-')
  })

  afterAll(async () => {
    for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    for (const spool of spools) await fs.rm(spool, {recursive: true, force: true})
  })

  async function replica() {
    const spool = await tempDir('dbb-replica-spool-')
    spools.push(spool)
    const child = startCli(['serve'], {
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: storeDir,
      API_TOKEN: 'replica-archiving-token-0123456789',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(await freePort()),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      BASE_BACKUP_INTERVAL: '7d',
      WAL_STREAMING: 'true',
      WAL_STREAMING_SLOT: 'dbb_replicas',
      // Each replica its own spool (a pod's volume); the slot is shared.
      WAL_STREAMING_DIR: path.join(spool, 'spool'),
    })
    running.push(child)
    let stderr = ''
    child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
    const result = collect(child)
    return {child, result, output: () => stderr}
  }

  const count = (text: string, event: string) => text.split('\n').filter((line) => line.includes(`"event":"${event}"`)).length

  it('one base backup per slot and one WAL stream; the standby streams once the streaming replica is killed', async () => {
    const [a, b] = await Promise.all([replica(), replica()])
    const streaming = await waitFor(() => [a, b].find((r) => r.output().includes('"event":"wal.streaming_started"')), 30_000, 'one replica to stream')
    const standby = streaming === a ? b : a
    await waitFor(() => (standby.output().includes('"event":"wal.streaming_standby"') ? true : undefined), 30_000, 'the other to stand by')

    // Both fired the base backup slot at start: one took it, the other waited for the lock and skipped.
    await waitFor(() => ([a, b].some((r) => r.output().includes("this slot's base backup was already taken")) ? true : undefined), 120_000, 'one replica to skip the slot')
    const sidecars = (await fs.readdir(storeDir)).filter((name) => name.endsWith('.tar.gz.meta.json'))
    expect(sidecars).toHaveLength(1)
    expect(count(a.output(), 'backup.succeeded') + count(b.output(), 'backup.succeeded')).toBe(1)

    // Exactly one pg_receivewal on the server, and the standby never started one.
    await waitFor(async () => ((await cluster.psql(`SELECT count(*) FROM pg_stat_replication`)) === '1' ? true : undefined), 20_000, 'one WAL sender')
    await new Promise((resolve) => setTimeout(resolve, 6000)) // longer than the standby's retry delay (5 s)
    expect(await cluster.psql(`SELECT count(*) FROM pg_stat_replication`)).toBe('1')
    expect(standby.output()).not.toContain('"event":"wal.streaming_started"')

    // The streaming replica dies: its session (and lock) end, the standby takes over the slot and streams.
    streaming.child.kill('SIGKILL')
    await streaming.result
    await waitFor(() => (standby.output().includes('"event":"wal.streaming_started"') ? true : undefined), 60_000, 'the standby to take over')
    await cluster.psql('CREATE TABLE after_failover AS SELECT generate_series(1, 5000) AS id')
    const segment = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
    await waitFor(async () => ((await fs.readdir(path.join(storeDir, 'wal'))).includes(`${segment}.gz`) ? true : undefined), 60_000, `${segment} in storage`)
    expect(await cluster.psql(`SELECT count(*) FROM pg_stat_replication`)).toBe('1')

    standby.child.kill('SIGTERM')
    const {code, stderr} = await standby.result
    expect(code).toBe(0)
    expect(stderr).not.toContain(cluster.password)
  }, 300_000)
})
