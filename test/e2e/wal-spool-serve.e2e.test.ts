import {ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/serve'

const TOKEN = 'e2e-spool-serve-token-0123456789abcdef'

/**
 * dbb serve with WAL_SPOOL_DIR: it uploads the async spool in-process and reports it in /metrics.
 * A spooled segment that conflicts with what storage holds (split-brain) stays in the spool and
 * shows as failing; the others are stored.
 */
describe('dbb serve uploads the WAL spool and reports it in /metrics', () => {
  let cluster: PgCluster
  let child: ChildProcess | undefined
  let dir: string

  beforeAll(async () => {
    cluster = await startPostgres()
  })

  afterAll(async () => {
    child?.kill('SIGKILL')
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('stores spooled segments, keeps a conflicting one, and exposes dbb_wal_spool_* gauges', async () => {
    dir = await tempDir('dbb-spool-serve-')
    const storeDir = path.join(dir, 'store')
    const spoolDir = path.join(dir, 'spool')
    await fs.mkdir(path.join(dir, 'pg_wal'), {recursive: true})
    await fs.mkdir(storeDir)
    await fs.mkdir(spoolDir)
    const names = ['000000010000000000000001', '000000010000000000000002', '000000010000000000000003']
    const contents = names.map(() => randomBytes(64 * 1024))
    // Segment 2 is already archived with other content: the spooled copy conflicts.
    await fs.writeFile(path.join(dir, 'pg_wal', names[1]), randomBytes(64 * 1024))
    expect((await runCli(['wal', 'push', `pg_wal/${names[1]}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: dir})).code).toBe(0)
    for (const [index, name] of names.entries()) await fs.writeFile(path.join(spoolDir, name), contents[index])

    const port = await freePort()
    child = startCli(['serve'], {
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: storeDir,
      WAL_SPOOL_DIR: spoolDir,
      API_TOKEN: TOKEN,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
    })
    const result = collect(child)
    const metric = async (name: string) => {
      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined))?.text()
      const line = body?.split('\n').find((text) => text.startsWith(`${name}{`))
      return line === undefined ? undefined : Number(line.split(' ').at(-1))
    }

    await waitFor(async () => ((await metric('dbb_wal_spool_upload_failing')) === 1 ? true : undefined), 60_000, 'the conflict to be reported')
    await waitFor(async () => ((await metric('dbb_wal_spool_files')) === 1 ? true : undefined), 60_000, 'the other segments to be stored')
    expect(await metric('dbb_wal_spool_bytes')).toBe(64 * 1024)
    expect(await fs.readdir(spoolDir)).toContain(names[1])
    for (const index of [0, 2]) {
      expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${names[index]}.gz`))).equals(contents[index])).toBe(true)
    }

    expect(await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8')).toMatch(/possible split-brain/)
    child.kill('SIGTERM')
    expect((await result).code).toBe(0)
    child = undefined
  }, 120_000)
})
