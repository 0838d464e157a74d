import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, startCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/wal'

/** dbb serve as a sidecar that cannot touch the server's config: WAL by pg_receivewal, base backups on its own schedule. */
describe('dbb serve with WAL_STREAMING=true and BASE_BACKUP_INTERVAL (real PostgreSQL, no archive_command)', () => {
  let cluster: PgCluster
  let storeDir: string
  let spoolDir: string

  beforeAll(async () => {
    cluster = await startPostgres({settings: {archive_mode: 'off'}})
    storeDir = await tempDir('dbb-serve-wal-store-')
    spoolDir = path.join(await tempDir('dbb-serve-wal-spool-'), 'spool')
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(path.dirname(spoolDir), {recursive: true, force: true})
  })

  it('streams completed segments into storage, takes a base backup, and stops cleanly on SIGTERM', async () => {
    const child = startCli(['serve'], {
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: storeDir,
      API_TOKEN: 'serve-wal-test-token-0123456789',
      HTTP_PORT: '0',
      HTTP_HOST: '127.0.0.1',
      BACKUP_INTERVAL: '7d',
      BASE_BACKUP_INTERVAL: '7d',
      WAL_STREAMING: 'true',
      WAL_STREAMING_SLOT: 'dbb_sidecar',
      WAL_STREAMING_DIR: spoolDir,
    })
    const result = collect(child)
    try {
      const sidecar = await waitFor('a base backup', async () =>
        (await fs.readdir(storeDir)).find((name) => name.endsWith('.tar.gz.meta.json')),
      )
      expect(JSON.parse(await fs.readFile(path.join(storeDir, sidecar), 'utf8'))).toMatchObject({type: 'base', triggeredBy: 'scheduler'})
      await waitFor('pg_receivewal to connect', async () =>
        (await cluster.psql(`SELECT count(*) FROM pg_stat_replication WHERE application_name = 'dbb'`)) === '1' ? true : undefined,
      )

      await cluster.psql('CREATE TABLE t AS SELECT generate_series(1, 5000) AS id')
      const segment = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
      await waitFor(`${segment} in storage`, async () => (existsSync(path.join(storeDir, 'wal', `${segment}.gz`)) ? true : undefined))
      expect(await cluster.psql(`SELECT active FROM pg_replication_slots WHERE slot_name = 'dbb_sidecar'`)).toBe('t')
    } finally {
      child.kill('SIGTERM')
    }

    const {code, stderr} = await result
    expect(code).toBe(0)
    expect(stderr).toMatch(/"event":"wal.streaming_started"/)
    expect(stderr).not.toContain(cluster.password)
    expect((await fs.readdir(spoolDir)).filter((name) => /^[0-9A-F]{24}$/.test(name))).toEqual([])
  })
})
