import {ListObjectsV2Command, PutObjectCommand} from '@aws-sdk/client-s3'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {runCli, tempDir} from '../helpers/cli'
import {RecordingProxy, startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'
const PREFIX = 'damaged'
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Issue 11 holes 2 and 3 on a real S3-protocol server (s3rver, its own process) with the suite's
 * fault-injecting proxy between the spawned dbb and the server: the GET of the newest backup's
 * sidecar answers 500 (on every SDK attempt). A read error is not absence: prune deletes nothing
 * of that backup and exits 1, `backup list` shows it as unreadable, `latest` fails naming it.
 */
describe('an unreadable sidecar on S3 (500 on its GET)', () => {
  let s3: S3Server
  let proxy: RecordingProxy
  let older: string
  let newest: string

  async function putBackup(createdAt: Date): Promise<string> {
    const id = `backup_${createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}.sql.gz`
    const dump = gzipSync(Buffer.from(`-- ${id}\nSELECT 1;\n`))
    const metadata = {
      id,
      type: 'logical',
      createdAt: createdAt.toISOString(),
      sizeBytes: dump.length,
      sha256: createHash('sha256').update(dump).digest('hex'),
      durationMs: 5,
      triggeredBy: 'cli',
      database: 'app',
      pgVersion: '15.18',
      format: 'plain',
      compression: 'gzip',
    }
    const client = s3.client()
    await client.send(new PutObjectCommand({Bucket: s3.bucket, Key: `${PREFIX}/${id}`, Body: dump}))
    await client.send(new PutObjectCommand({Bucket: s3.bucket, Key: `${PREFIX}/${id}.meta.json`, Body: JSON.stringify(metadata)}))
    return id
  }

  async function objectKeys(): Promise<string[]> {
    const page = await s3.client().send(new ListObjectsV2Command({Bucket: s3.bucket, Prefix: `${PREFIX}/`}))
    return (page.Contents ?? []).map((object) => object.Key!.slice(PREFIX.length + 1)).sort()
  }

  /** dbb through the proxy; the newest sidecar's GET fails with 500 on every attempt of one command. */
  const viaProxy = (extra: Record<string, string> = {}) => s3.dbbEnv({S3_PREFIX: PREFIX, ...extra}, proxy.endpoint)
  const failNewestSidecar = () =>
    proxy.inject({
      match: (request) => request.method === 'GET' && request.url.includes(`${newest}.meta.json`),
      status: 500,
      code: 'InternalError',
      message: 'We encountered an internal error. Please try again.',
      times: 10,
    })

  beforeAll(async () => {
    s3 = await startS3Server()
    older = await putBackup(new Date(Date.now() - 2 * 86_400_000))
    newest = await putBackup(new Date(Date.now() - 3_600_000))
    // Both backups' objects are now older than the ORPHAN_GRACE the tests use.
    await sleep(1500)
  }, 60_000)

  beforeEach(async () => {
    proxy = await startRecordingProxy(() => s3.port)
  })

  afterEach(async () => {
    await proxy.close()
    // Nothing of either backup was deleted.
    expect(await objectKeys()).toEqual([older, `${older}.meta.json`, newest, `${newest}.meta.json`].sort())
  })

  afterAll(async () => {
    await s3?.destroy()
  })

  it('one 500 on the sidecar GET is retried by the SDK: nothing is reported damaged, nothing deleted', async () => {
    proxy.inject({
      match: (request) => request.method === 'GET' && request.url.includes(`${newest}.meta.json`),
      status: 500,
      code: 'InternalError',
      message: 'We encountered an internal error. Please try again.',
      times: 1,
    })
    const result = await runCli(['backup', 'list', '--json'], viaProxy())
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout).map((entry: {id: string; status: string}) => [entry.id, entry.status])).toEqual([
      [newest, 'ok'],
      [older, 'ok'],
    ])
    expect(proxy.requests.filter((request) => request.url.includes(`${newest}.meta.json`)).map((request) => request.status)).toEqual([500, 200])
  })

  it('prune keeps the backup whose sidecar read failed (and the floor), reports it and exits 1', async () => {
    failNewestSidecar()
    const result = await runCli(['prune', '--json'], viaProxy({BACKUPS_TO_RETAIN: '1', ORPHAN_GRACE: '1s'}))
    expect(result.code).toBe(1)
    const report = JSON.parse(result.stdout)
    expect(report.deleted).toEqual([])
    expect(report.damaged).toEqual([expect.objectContaining({id: newest, status: 'unreadable', cause: expect.stringContaining(`reading ${newest}.meta.json failed`)})])
    // The read really failed on the wire: the 500 was answered, not a missing object.
    expect(proxy.requests.filter((request) => request.url.includes(`${newest}.meta.json`)).map((request) => request.status)).toContain(500)
  })

  it('backup list shows it as unreadable and exits 1', async () => {
    failNewestSidecar()
    const result = await runCli(['backup', 'list', '--json'], viaProxy())
    expect(result.code).toBe(1)
    expect(JSON.parse(result.stdout).map((entry: {id: string; status: string}) => [entry.id, entry.status])).toEqual([
      [newest, 'unreadable'],
      [older, 'ok'],
    ])
  })

  it('download latest fails naming the newest backup instead of serving the older one', async () => {
    failNewestSidecar()
    const dir = await tempDir()
    try {
      const out = path.join(dir, 'latest.sql.gz')
      const result = await runCli(['backup', 'download', 'latest', '-o', out, '--json'], viaProxy())
      expect(result.code).toBe(1)
      expect(JSON.parse(result.stdout)).toMatchObject({error: 'BACKUP_UNREADABLE', message: expect.stringContaining(`the newest backup (${newest}) cannot be used`)})
      await expect(fs.stat(out)).rejects.toThrow()
      expect(proxy.requests.some((request) => request.method === 'GET' && request.url.endsWith(`/${older}`))).toBe(false)
    } finally {
      await fs.rm(dir, {recursive: true, force: true})
    }
  })
})
