import {GetObjectCommand} from '@aws-sdk/client-s3'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {BIN} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {stopLockHolder, waitFor} from '../helpers/wal'

/**
 * Storage down while a real PostgreSQL keeps writing, with `wal push --async` to a real s3rver:
 * the spool takes segments up to WAL_SPOOL_MAX_SEGMENTS (each acknowledged only once durable in
 * the spool), then pushes fail and PostgreSQL keeps the rest in pg_wal; the uploader reports its
 * error. When storage is back, everything drains and every segment in S3 equals pg_wal's bytes.
 */
describe('wal push --async with S3 down (real PostgreSQL, real s3rver)', () => {
  let cluster: PgCluster | undefined
  let s3: S3Server
  let spoolDir: string
  const PREFIX = 'outage'

  beforeAll(async () => {
    s3 = await startS3Server()
    spoolDir = await makeServerOwnedDir('dbb-outage-spool-')
    const settings = Object.entries({...s3.dbbEnv({S3_PREFIX: PREFIX}), WAL_SPOOL_DIR: spoolDir, WAL_SPOOL_MAX_SEGMENTS: '3'})
      .map(([name, value]) => `${name}=${value}`)
      .join(' ')
    cluster = await startPostgres({
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        wal_keep_size: "'2GB'",
        max_wal_size: "'4GB'",
        archive_command: `'${settings} ${process.execPath} ${BIN} wal push --async %p'`,
      },
    })
  })

  afterAll(async () => {
    await cluster?.destroy()
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))

    await s3?.destroy()
    await fs.rm(spoolDir, {recursive: true, force: true})
  })

  const spooled = async () => (await fs.readdir(spoolDir)).filter((entry) => /^[0-9A-F]{24}$/.test(entry))
  const archiver = async () => {
    const [archived, failed] = (await cluster!.psql('SELECT coalesce(last_archived_wal, $$$$), failed_count FROM pg_stat_archiver')).split('|')
    return {archived, failed: Number(failed)}
  }

  const writeSegment = async (round: number) => {
    await cluster!.psql(`INSERT INTO filler SELECT g, repeat(md5((g + ${round})::text), 4) FROM generate_series(1, 5000) g`)
    return cluster!.psql('SELECT pg_walfile_name(pg_switch_wal())')
  }

  it('spools up to the bound, then fails pushes; nothing is lost once storage is back', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE filler (id int, payload text)')
    const first = await writeSegment(0)
    await waitFor('the first segment archived', async () => ((await archiver()).archived >= first ? true : undefined), 60_000)

    await s3.stop()
    const written: string[] = [first]
    for (let round = 1; round <= 6; round++) written.push(await writeSegment(round))
    await waitFor('the spool full and PostgreSQL failing pushes', async () => ((await spooled()).length === 3 && (await archiver()).failed > 0 ? true : undefined), 120_000)
    expect(await fs.readFile(path.join(spoolDir, 'uploader.error'), 'utf8')).toMatch(/\S/)
    // Acknowledged segments are in the spool, complete; the others wait in pg_wal.
    for (const name of await spooled()) {
      expect((await fs.readFile(path.join(spoolDir, name))).equals(await fs.readFile(path.join(db.dataDir, 'pg_wal', name)))).toBe(true)
    }

    expect((await archiver()).archived < written.at(-1)!).toBe(true)

    await s3.start()
    // A new segment wakes PostgreSQL's archiver, which waits a minute after repeated failures.
    written.push(await writeSegment(7))
    await waitFor(
      'everything archived and the spool drained',
      async () => ((await archiver()).archived >= written.at(-1)! && (await spooled()).length === 0 ? true : undefined),
      240_000,
    )

    const client = s3.client()
    for (const name of written) {
      const object = await client.send(new GetObjectCommand({Bucket: s3.bucket, Key: `${PREFIX}/wal/${name}.gz`}))
      const stored = gunzipSync(Buffer.from(await object.Body!.transformToByteArray()))
      expect(stored.equals(await fs.readFile(path.join(db.dataDir, 'pg_wal', name)))).toBe(true)
    }
  }, 420_000)
})
