import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {hashArchived} from '../../src/wal/archive'
import {walKey} from '../../src/wal/segments'
import {WalStreamer} from '../../src/wal/streamer'
import {tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/wal'

describe('WAL streaming with pg_receivewal and a replication slot (real PostgreSQL, no archive_command)', () => {
  let cluster: PgCluster
  let storeDir: string
  let spoolDir: string
  let streamer: WalStreamer | undefined

  beforeAll(async () => {
    // wal_level=replica is PostgreSQL's default; archiving stays off: nothing but the streamer moves WAL.
    cluster = await startPostgres({settings: {archive_mode: 'off'}})
    storeDir = await tempDir('dbb-stream-store-')
    spoolDir = path.join(await tempDir('dbb-stream-spool-'), 'spool')
  })

  afterAll(async () => {
    await streamer?.stop()
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(path.dirname(spoolDir), {recursive: true, force: true})
  })

  const storage = () => new LocalBackend(storeDir)
  const newStreamer = () =>
    new WalStreamer({
      database: {host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'postgres'},
      storage: storage(),
      slot: 'dbb_test',
      spoolDir,
      logger: createLogger({format: 'json', level: 'warn'}),
      pollIntervalMs: 200,
      restartDelayMs: 500,
    })

  async function writeAndSwitch(rows: number): Promise<string> {
    await cluster.psql(`INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`)
    return cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  }

  const archived = (segment: string) => storage().stat(walKey(segment))

  it('stores each completed segment, byte-identical to the server, and resumes after a stop without gaps', async () => {
    await cluster.psql('CREATE TABLE filler (id int, payload text)')
    streamer = newStreamer()
    await streamer.start()
    expect(await cluster.psql(`SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'dbb_test'`)).toBe('physical')
    await waitFor('pg_receivewal to connect', async () => ((await cluster.psql('SELECT count(*) FROM pg_stat_replication')) === '1' ? true : undefined))

    const first = await writeAndSwitch(1000)
    await waitFor(`${first} in storage`, async () => (await archived(first)) ?? undefined)
    const serverCopy = await fs.readFile(path.join(cluster.dataDir, 'pg_wal', first))
    const stored = await hashArchived(storage(), walKey(first))
    expect(stored.sha256).toBe(createHash('sha256').update(serverCopy).digest('hex'))
    expect(await fs.readdir(spoolDir)).not.toContain(first)

    // While the streamer is down the slot holds the server's WAL; after the restart nothing is missing.
    await streamer.stop()
    const whileDown = [await writeAndSwitch(500), await writeAndSwitch(500)]
    streamer = newStreamer()
    await streamer.start()
    const last = await writeAndSwitch(200)
    await waitFor(`${last} in storage`, async () => (await archived(last)) ?? undefined)
    for (const segment of whileDown) expect(await archived(segment)).toBeDefined()

    const names: string[] = []
    for await (const object of storage().list('wal/')) names.push(path.basename(object.key, '.gz'))
    const numbers = names
      .filter((name) => /^[0-9A-F]{24}$/.test(name))
      .map((name) => Number.parseInt(name.slice(16), 16))
      .sort((a, b) => a - b)
    expect(numbers.length).toBeGreaterThanOrEqual(4)
    expect(numbers).toEqual(Array.from({length: numbers.length}, (_, index) => numbers[0] + index))
    expect(streamer.getStatus()).toMatchObject({running: true, lastError: null})
  })
})
