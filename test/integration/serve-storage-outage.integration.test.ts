import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Readable} from 'node:stream'

import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {s3Provider} from '../../src/plugins/s3/src/index'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'
import {writeLocalBackup} from '../helpers/fake-backups'
import {RecordingProxy, startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {captureLogger, serveApp} from '../helpers/serve'

const TOKEN = 'storage-outage-token-0123456789abcdef'
const AUTH = {Authorization: `Bearer ${TOKEN}`}
const READS = ['/api/v1/backups', '/api/v1/backups/latest', '/api/v1/backups/latest/download']

/**
 * Issue 11 hole 8: with the storage unreachable, the API answered `500 INTERNAL_ERROR` and the cause
 * was only in the server log. Now every read of storage answers 503 STORAGE_UNAVAILABLE with the
 * backend's own (secret-free) message, as /health does; when storage is back, the same requests
 * succeed. Real backends: s3rver through the AWS SDK (stopped, and answering 500 through a proxy),
 * and a local directory that cannot be read.
 */
describe('storage outages over the REST API are 503 with the cause', () => {
  let root: string
  let backupId: string

  beforeAll(async () => {
    root = await tempDir('dbb-outage-')
    await fs.mkdir(path.join(root, 'staging'))
    backupId = (await writeLocalBackup(path.join(root, 'staging'), new Date('2026-11-21T03:00:00Z'))).id
  })

  afterAll(async () => {
    await fs.rm(root, {recursive: true, force: true})
  })

  async function expectOutage(base: string, messagePattern: RegExp, secrets: string[] = []): Promise<void> {
    for (const route of READS) {
      const response = await fetch(`${base}${route}`, {headers: AUTH})
      const text = await response.text()
      expect([route, response.status]).toEqual([route, 503])
      // Clients (and proxies) learn when to try again.
      expect([route, response.headers.get('retry-after')]).toEqual([route, '30'])
      expect([route, JSON.parse(text)]).toEqual([route, {error: 'STORAGE_UNAVAILABLE', message: expect.stringMatching(messagePattern)}])
      for (const secret of secrets) expect(text).not.toContain(secret)
    }
  }

  async function expectServed(base: string): Promise<void> {
    const list = await fetch(`${base}/api/v1/backups`, {headers: AUTH})
    expect(list.status).toBe(200)
    expect(((await list.json()) as {id: string}[]).map((backup) => backup.id)).toEqual([backupId])
    const download = await fetch(`${base}/api/v1/backups/latest/download`, {headers: AUTH})
    expect(download.status).toBe(200)
    expect(Buffer.from(await download.arrayBuffer())).toEqual(await fs.readFile(path.join(root, 'staging', backupId)))
  }

  async function upload(storage: StorageBackend): Promise<void> {
    for (const key of [backupId, `${backupId}.meta.json`]) await storage.put(key, Readable.from([await fs.readFile(path.join(root, 'staging', key))]))
  }

  describe('s3 (s3rver through the AWS SDK)', () => {
    let server: S3Server
    let proxy: RecordingProxy
    let storage: StorageBackend
    const secret = 'outage-secret-access-key-do-not-print'

    beforeAll(async () => {
      server = await startS3Server()
      proxy = await startRecordingProxy(() => server.port)
      // s3rver accepts any secret: a distinctive one proves that no answer carries it.
      const env = {...server.dbbEnv({S3_PREFIX: 'outage'}, proxy.endpoint), AWS_SECRET_ACCESS_KEY: secret}
      storage = await s3Provider.create(env, {logger: createLogger({level: 'silent'})})
      await upload(storage)
    })

    afterAll(async () => {
      await storage?.close?.()
      await proxy?.close()
      await server?.destroy()
    })

    it('answers 503 while the S3 server is down, and serves again once it is back', async () => {
      const served = await serveApp(storage, {token: TOKEN, logger: captureLogger().logger})
      try {
        await expectServed(served.base)
        await server.stop()
        await expectOutage(served.base, /^storage \(s3\) unavailable: .+/, [secret])
        const health = await fetch(`${served.base}/health`)
        expect(health.status).toBe(503)
        await server.start()
        await expectServed(served.base)
      } finally {
        await served.close()
      }
    })

    it('answers 503 for a download whose dump S3 refuses (503 SlowDown) while the listing works', async () => {
      const served = await serveApp(storage, {token: TOKEN, logger: captureLogger().logger})
      try {
        await expectServed(served.base)
        const dumpRequest = (request: {method: string; url: string}) => request.method === 'GET' && request.url.split('?')[0].endsWith(`/${backupId}`)
        proxy.inject({match: dumpRequest, status: 503, code: 'SlowDown', message: 'Please reduce your request rate.', times: 20})
        const download = await fetch(`${served.base}/api/v1/backups/${backupId}/download`, {headers: AUTH})
        expect(download.status).toBe(503)
        expect(await download.json()).toEqual({error: 'STORAGE_UNAVAILABLE', message: expect.stringMatching(/^storage \(s3\) unavailable: .*SlowDown/)})
        expect((await fetch(`${served.base}/api/v1/backups`, {headers: AUTH})).status).toBe(200)
      } finally {
        await served.close()
      }
    })

    // Last in this block: the injected failures outlast it.
    it('answers 503 when S3 answers 500 to every request, naming the S3 error', async () => {
      const served = await serveApp(storage, {token: TOKEN, logger: captureLogger().logger})
      try {
        proxy.inject({match: () => true, status: 500, code: 'InternalError', message: 'We encountered an internal error', times: 1000})
        await expectOutage(served.base, /^storage \(s3\) unavailable: .*(InternalError|internal error)/i, [secret])
      } finally {
        await served.close()
      }
    })
  })

  describe('local directory', () => {
    it('answers 503 naming the directory when BACKUP_LOCAL_DIR is not a directory (its parent is a file)', async () => {
      const file = path.join(root, 'a-file')
      await fs.writeFile(file, 'not a directory')
      const served = await serveApp(new LocalBackend(path.join(file, 'backups')), {token: TOKEN, logger: captureLogger().logger})
      try {
        await expectOutage(served.base, new RegExp(`^storage \\(local\\) unavailable: .*${file}`))
      } finally {
        await served.close()
      }
    })

    it('answers 503 while the directory is gone, and serves again once it is back', async () => {
      const dir = path.join(root, 'local')
      await fs.mkdir(dir)
      await upload(new LocalBackend(dir))
      const served = await serveApp(new LocalBackend(dir), {token: TOKEN, logger: captureLogger().logger})
      try {
        await expectServed(served.base)
        await fs.rename(dir, `${dir}-away`)
        await expectOutage(served.base, /^storage \(local\) unavailable: backup directory .* does not exist \(check BACKUP_LOCAL_DIR\)$/)
        await fs.rename(`${dir}-away`, dir)
        await expectServed(served.base)
      } finally {
        await served.close()
      }
    })
  })
})
