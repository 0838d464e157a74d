import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, waitFor, waitForPromotion} from '../helpers/wal'

const unzstd = (body: Buffer) => execFileSync('zstd', ['-dc'], {input: body, maxBuffer: 64 * 1024 * 1024})
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])

/** WAL archived with COMPRESSION=zstd beside gzip WAL: push, re-push, fetch, damage (restore_command's exit-code contract). */
describe('dbb wal push / fetch with COMPRESSION=zstd (local storage)', () => {
  let storeDir: string
  let workDir: string
  const zstdSegment = '000000010000000000000011'
  const gzipSegment = '000000010000000000000012'
  const content = new Map<string, Buffer>()

  beforeAll(async () => {
    storeDir = await tempDir('dbb-walz-store-')
    workDir = await tempDir('dbb-walz-work-')
    await fs.mkdir(path.join(workDir, 'pg_wal'))
    for (const segment of [zstdSegment, gzipSegment]) {
      content.set(segment, Buffer.concat([randomBytes(64 * 1024), Buffer.alloc(16 * 1024 * 1024 - 64 * 1024)]))
      await fs.writeFile(path.join(workDir, 'pg_wal', segment), content.get(segment)!)
    }
  })

  afterAll(async () => {
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(workDir, {recursive: true, force: true})
  })

  const push = (segment: string, extra: Record<string, string> = {}) => runCli(['wal', 'push', `pg_wal/${segment}`, '--json'], {BACKUP_LOCAL_DIR: storeDir, ...extra}, {cwd: workDir})
  const fetch = (segment: string, dest: string, extra: Record<string, string> = {}) => runCli(['wal', 'fetch', segment, dest], {BACKUP_LOCAL_DIR: storeDir, ...extra}, {cwd: workDir})
  const stored = (file: string) => fs.readFile(path.join(storeDir, 'wal', file))

  it('stores wal/<name>.zst; a re-push finds it under either COMPRESSION and writes nothing new', async () => {
    const first = await push(zstdSegment, {COMPRESSION: 'zstd'})
    expect(first.code).toBe(0)
    expect(JSON.parse(first.stdout)).toMatchObject({key: `wal/${zstdSegment}.zst`, outcome: 'stored'})
    const body = await stored(`${zstdSegment}.zst`)
    expect(body.subarray(0, 4)).toEqual(ZSTD_MAGIC)
    expect(unzstd(body).equals(content.get(zstdSegment)!)).toBe(true)

    for (const codec of ['zstd', 'gzip']) {
      const again = await push(zstdSegment, {COMPRESSION: codec})
      expect(again.code).toBe(0)
      expect(JSON.parse(again.stdout)).toMatchObject({outcome: 'already-archived'})
    }

    const gzip = await push(gzipSegment)
    expect(JSON.parse(gzip.stdout)).toMatchObject({key: `wal/${gzipSegment}.gz`, outcome: 'stored'})
    const archived = await fs.readdir(path.join(storeDir, 'wal'))
    expect(archived).toEqual(expect.arrayContaining([`${zstdSegment}.zst`, `${gzipSegment}.gz`]))
    expect(archived).not.toContain(`${zstdSegment}.gz`)
  })

  it('different content under a name archived as .zst is a conflict whatever COMPRESSION the pusher has', async () => {
    const conflicting = path.join(workDir, 'other', zstdSegment)
    await fs.mkdir(path.dirname(conflicting), {recursive: true})
    await fs.writeFile(conflicting, randomBytes(4096))
    const result = await runCli(['wal', 'push', conflicting], {BACKUP_LOCAL_DIR: storeDir, COMPRESSION: 'gzip'})
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/already archived .*possible split-brain/s)
    expect(await fs.readdir(path.join(storeDir, 'wal'))).not.toContain(`${zstdSegment}.gz`)
  })

  it.each([[{}], [{COMPRESSION: 'zstd'}]])('fetches both codecs of a mixed archive (env %j); a missing file exits 1', async (extra) => {
    for (const segment of [zstdSegment, gzipSegment]) {
      const dest = `pg_wal/RESTORED-${segment}`
      const result = await fetch(segment, dest, extra)
      expect(result.code).toBe(0)
      expect((await fs.readFile(path.join(workDir, dest))).equals(content.get(segment)!)).toBe(true)
      await fs.rm(path.join(workDir, dest))
    }

    expect((await fetch('0000000100000000000000FF', 'pg_wal/MISSING', extra)).code).toBe(1)
  })

  it.each([
    ['truncated', (body: Buffer) => body.subarray(0, body.length - 9)],
    ['one flipped byte', (body: Buffer) => Buffer.from(body).fill(body[100] ^ 0xff, 100, 101)],
    ['gzip bytes under .zst', (body: Buffer) => gzipSync(unzstd(body))],
  ])('a damaged .zst segment (%s): fetch exits 200 (fatal, never "not in archive"), nothing left in pg_wal', async (_damage, damage) => {
    const key = path.join(storeDir, 'wal', `${zstdSegment}.zst`)
    const original = await fs.readFile(key)
    await fs.writeFile(key, damage(original))
    try {
      const result = await fetch(zstdSegment, 'pg_wal/RECOVERYXLOG')
      expect(result.code).toBe(200)
      expect(result.stderr).toMatch(new RegExp(`${zstdSegment}.*(damaged|zstd)`))
      expect((await fs.readdir(path.join(workDir, 'pg_wal'))).filter((name) => !name.startsWith('0000'))).toEqual([])
    } finally {
      await fs.writeFile(key, original)
    }
  })
})

/** Base backup and WAL both zstd (after a gzip WAL segment): the cluster restored from them has every row. */
describe('point-in-time recovery from a zstd base backup and zstd WAL (real PostgreSQL)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-pitr-zstd-')
    const settings = archivingSettings(storeDir)
    // archive_command runs through the shell with the server's environment: the setting goes in the command.
    cluster = await startPostgres({settings: {...settings, archive_command: settings.archive_command.replace(/^'/, "'COMPRESSION=zstd ")}})
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  it('restores a .tar.zst base backup and replays .zst WAL: all rows are back', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), BACKUP_LOCAL_DIR: storeDir, COMPRESSION: 'zstd'})
    expect(backup.code).toBe(0)
    const {metadata} = JSON.parse(backup.stdout)
    expect(metadata).toMatchObject({type: 'base', format: 'tar', compression: 'zstd'})
    expect(metadata.id).toMatch(/\.tar\.zst$/)

    await db.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1001, 1500) g')
    const segment = await db.psql('SELECT pg_walfile_name(pg_switch_wal())')
    await waitFor(`${segment} archived`, async () => ((await fs.stat(path.join(storeDir, 'wal', `${segment}.zst`)).catch(() => undefined)) ? true : undefined))

    await db.stop()
    await fs.rm(db.dataDir, {recursive: true, force: true})
    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--json'], {BACKUP_LOCAL_DIR: storeDir})
    expect(restore.code).toBe(0)
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql('SELECT count(*), max(id) FROM orders')).toBe('1500|1500')
  }, 300_000)
})
