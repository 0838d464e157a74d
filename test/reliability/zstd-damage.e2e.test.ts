import {GetObjectCommand, PutObjectCommand} from '@aws-sdk/client-s3'
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {fingerprint, seedDatabase} from '../helpers/seed'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'
const PREFIX = 'zstd-damage'

/** Where the test reads and writes stored objects behind dbb's back. */
interface RawStore {
  env: Record<string, string>
  read(key: string): Promise<Buffer>
  write(key: string, body: Buffer): Promise<void>
  close(): Promise<void>
}

async function localStore(): Promise<RawStore> {
  const dir = await tempDir()
  return {
    env: {BACKUP_LOCAL_DIR: dir},
    read: (key) => fs.readFile(path.join(dir, key)),
    write: (key, body) => fs.writeFile(path.join(dir, key), body),
    close: () => fs.rm(dir, {recursive: true, force: true}),
  }
}

async function s3rverStore(): Promise<RawStore> {
  const s3: S3Server = await startS3Server()
  const client = s3.client()
  return {
    env: s3.dbbEnv({S3_PREFIX: PREFIX}),
    read: async (key) => Buffer.from(await (await client.send(new GetObjectCommand({Bucket: s3.bucket, Key: `${PREFIX}/${key}`}))).Body!.transformToByteArray()),
    write: async (key, body) => {
      await client.send(new PutObjectCommand({Bucket: s3.bucket, Key: `${PREFIX}/${key}`, Body: body}))
    },
    close: () => s3.destroy(),
  }
}

const sha256 = (body: Buffer) => createHash('sha256').update(body).digest('hex')
/** The rows and objects of "shop"; without fingerprint()'s `serial`, which reading advances. */
const contents = async (cluster: PgCluster) => {
  const {serial: _advancedByReading, ...rest} = await fingerprint(cluster, 'shop')
  return rest
}

/**
 * A zstd backup damaged after it was stored is refused exactly as a gzip one is: listed as damaged
 * when its size changed, never downloaded under its name, never restored (the target keeps its
 * rows). And when the sidecar is rewritten to match the damaged bytes, so the sha256 cannot tell,
 * the zstd frame's own checks (block structure, XXH64 content checksum) still refuse it.
 */
describe.each([
  ['local', localStore],
  ['s3rver', s3rverStore],
])('damaged zstd backups (%s storage, real PostgreSQL)', (_kind, openStore) => {
  let cluster: PgCluster
  let store: RawStore
  let env: Record<string, string>
  let id: string
  let original: Buffer
  let sidecar: Record<string, unknown>
  let rows: Record<string, string>
  const outDir = () => path.join(cluster.dataDir, '..')

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 20_000)
    store = await openStore()
    env = {...cluster.dbbEnv('shop'), ...store.env, COMPRESSION: 'zstd'}
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    expect(backup.code).toBe(0)
    id = JSON.parse(backup.stdout).metadata.id
    expect(id).toMatch(/\.sql\.zst$/)
    original = await store.read(id)
    sidecar = JSON.parse((await store.read(`${id}.meta.json`)).toString('utf8'))
    // The target differs from the backup, so a restore that went through would show.
    await cluster.psql(`DELETE FROM customers WHERE id % 3 = 0`, 'shop')
    rows = await contents(cluster)
  })

  afterEach(async () => {
    await store.write(id, original)
    await store.write(`${id}.meta.json`, Buffer.from(JSON.stringify(sidecar)))
  })

  afterAll(async () => {
    await store?.close()
    await cluster?.destroy()
  })

  async function expectRefused(message: RegExp): Promise<void> {
    const output = path.join(outDir(), `download-${Date.now()}`)
    const download = await runCli(['backup', 'download', id, '-o', output], store.env)
    expect(download.code).toBe(1)
    await expect(fs.stat(output)).rejects.toThrow(/ENOENT/)
    const restore = await runCli(['restore', id, '--force'], env)
    expect(restore.code).toBe(1)
    expect(restore.stderr).toMatch(message)
    expect(await contents(cluster)).toEqual(rows)
  }

  it('truncated frame: listed as damaged, download and restore refused, the target untouched', async () => {
    await store.write(id, original.subarray(0, Math.floor(original.length / 2)))
    const list = await runCli(['backup', 'list', '--json'], store.env)
    expect(list.code).toBe(1)
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({id, status: 'damaged'})])
    await expectRefused(new RegExp(`${id.replace(/\./g, '\\.')}`))
  })

  it('one flipped byte (same size): download refused by sha256, restore refused, the target untouched', async () => {
    const flipped = Buffer.from(original)
    flipped[Math.floor(flipped.length / 2)] ^= 0xff
    await store.write(id, flipped)
    await expectRefused(/integrity check failed|damaged/)
  })

  it('damaged bytes with a sidecar rewritten to match them: the zstd frame checks refuse the restore', async () => {
    for (const damaged of [original.subarray(0, original.length - 7), Buffer.concat([original.subarray(0, 200), Buffer.from('garbage'), original.subarray(207)])]) {
      await store.write(id, damaged)
      await store.write(`${id}.meta.json`, Buffer.from(JSON.stringify({...sidecar, sizeBytes: damaged.length, sha256: sha256(damaged)})))
      const restore = await runCli(['restore', id, '--force'], env)
      expect(restore.code).toBe(1)
      expect(restore.stderr).toMatch(/not a valid compressed stream|zstd/)
      expect(await contents(cluster)).toEqual(rows)
    }
  })

  it('wrong codec: gzip bytes under the .zst id are refused (listed damaged when the sidecar says gzip, a failed restore when it says zstd)', async () => {
    const gzipped = gzipSync(execFileSync('zstd', ['-dc'], {input: original, maxBuffer: 256 * 1024 * 1024}))
    await store.write(id, gzipped)
    await store.write(`${id}.meta.json`, Buffer.from(JSON.stringify({...sidecar, compression: 'gzip', sizeBytes: gzipped.length, sha256: sha256(gzipped)})))
    const list = await runCli(['backup', 'list', '--json'], store.env)
    expect(list.code).toBe(1)
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({id, status: 'damaged', cause: expect.stringMatching(/id says zstd but its sidecar says .*gzip/)})])

    await store.write(`${id}.meta.json`, Buffer.from(JSON.stringify({...sidecar, sizeBytes: gzipped.length, sha256: sha256(gzipped)})))
    const restore = await runCli(['restore', id, '--force'], env)
    expect(restore.code).toBe(1)
    expect(await contents(cluster)).toEqual(rows)
  })
})
