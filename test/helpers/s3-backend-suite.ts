import {CreateMultipartUploadCommand, ListMultipartUploadsCommand, PutObjectCommand} from '@aws-sdk/client-s3'
import {randomBytes} from 'node:crypto'
import * as net from 'node:net'
import {Readable} from 'node:stream'

import {listBackups} from '../../src/backup/metadata'
import {SIDECAR_INDEX_KEY} from '../../src/backup/sidecar-index'
import {s3Provider} from '../../src/plugins/s3/src/index'
import {parseS3Settings} from '../../src/plugins/s3/src/settings'
import {multipartPut} from '../../src/plugins/s3/src/upload'
import type {StorageBackend} from '../../src/storage/contract'
import {withTimeBound} from '../../src/storage/time-bound'
import {freePort} from './postgres'
import {RecordingProxy, startRecordingProxy} from './recording-proxy'
import {S3Capabilities, S3Server} from './s3-server'
import {chunked, listed, readAll, storageConformanceSuite} from './storage-conformance'

const MIB = 1024 * 1024
/** Collects the backend's warnings, so tests can assert what it logged. */
const quietLogger = {
  warnings: [] as object[],
  debug() {},
  info() {},
  warn(object: object) {
    quietLogger.warnings.push(object)
  },
}

/**
 * The s3 backend's own tests (and the storage conformance suite) against one S3 server: s3rver in
 * test/integration/s3-backend.integration.test.ts, Ceph RGW in test/reliability/s3-rgw.e2e.test.ts.
 * `acquire` gives a server with an empty bucket; assertions that differ by store read its `capabilities`.
 */
export function s3BackendSuite(kind: string, capabilities: S3Capabilities, acquire: () => Promise<S3Server>): void {
  let server: S3Server
  let prefixCounter = 0

  beforeAll(async () => {
    server = await acquire()
  }, 300_000)

  afterAll(async () => {
    await server?.destroy()
  })

  /** A backend on the test server under its own prefix, so the suites below do not see each other's objects. */
  async function backend(extra: Record<string, string> = {}, endpoint?: string): Promise<StorageBackend> {
    prefixCounter += 1
    return s3Provider.create({...server.dbbEnv({S3_PREFIX: `t${prefixCounter}/backups`, S3_PART_SIZE: '5MiB', ...extra}, endpoint)}, {logger: quietLogger})
  }

  // 12 MiB before a failure: with 5 MiB parts a multipart upload with two parts is under way.
  storageConformanceSuite({
    name: `s3 (${kind})`,
    provider: s3Provider,
    create: () => backend(),
    bytesBeforeFailure: 12 * MIB,
    atomicNoOverwrite: capabilities.conditionalPut && capabilities.conditionalCompleteMultipart,
    sweeps: true,
    // s3rver cannot list multipart uploads, so its sweep finds nothing to remove.
    leaveLeftover: capabilities.listMultipartUploads
      ? async (storage, key) => {
          const prefix = storage.location.slice(`s3://${server.bucket}/`.length)
          await server.client().send(new CreateMultipartUploadCommand({Bucket: server.bucket, Key: `${prefix}/${key}`}))
        }
      : undefined,
    // One 5 MiB part in flight: the declared bound is 3 × 1.5 s + 5 s + 5 s.
    unresponsive: (endpoint) => backend({S3_CONNECT_TIMEOUT: '500ms', S3_REQUEST_TIMEOUT: '1s', S3_UPLOAD_CONCURRENCY: '1'}, endpoint.url),
  })

  // What commands use: the backend inside core's time bound, which must keep every rule.
  storageConformanceSuite({
    name: `s3 (${kind}) through core's time bound`,
    create: async () => withTimeBound(await backend(), {plugin: '@dbb/storage-s3'}),
    bytesBeforeFailure: 12 * MIB,
    atomicNoOverwrite: capabilities.conditionalPut && capabilities.conditionalCompleteMultipart,
  })

  describe(`s3 backend against ${kind}`, () => {
    it('uploads a stream of several parts intact, as one object under <prefix>/<key>', async () => {
      const storage = await backend({S3_PREFIX: 'multi/part'})
      const data = randomBytes(17 * MIB + 5)
      const proxy = await startRecordingProxy(() => server.port)
      const viaProxy = await backend({S3_PREFIX: 'multi/part'}, proxy.endpoint)
      try {
        await expect(viaProxy.put('backup_20261121T030000Z.sql.gz', chunked(data, MIB))).resolves.toEqual({sizeBytes: data.length})
        const parts = proxy.requests.filter((request) => request.method === 'PUT' && /[?&]partNumber=\d+/.test(request.url))
        expect(parts).toHaveLength(4)
        expect(proxy.requests.some((request) => request.method === 'POST' && request.url.includes('uploadId='))).toBe(true)
        expect(proxy.requests.every((request) => request.url.startsWith(`/${server.bucket}/multi/part/`))).toBe(true)
        expect((await readAll(await storage.get('backup_20261121T030000Z.sql.gz'))).equals(data)).toBe(true)
      } finally {
        await proxy.close()
        await Promise.all([storage.close?.(), viaProxy.close?.()])
      }
    })

    it('lists more than 1,000 objects (ListObjectsV2 paging), and core reads their sidecars concurrently', async () => {
      // 540 backups = 1,080 objects (dump + sidecar), created directly through the SDK.
      const client = server.client()
      const ids = Array.from({length: 540}, (_, index) => {
        const stamp = new Date(Date.UTC(2026, 0, 1) + index * 60_000).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
        return `backup_${stamp}.sql.gz`
      })
      const bodies = ids.flatMap((id, index) => [
        {key: `paging/${id}`, body: 'dump'},
        {key: `paging/${id}.meta.json`, body: JSON.stringify(sidecar(id, index))},
      ])
      let next = 0
      const worker = async () => {
        while (next < bodies.length) {
          const {key, body} = bodies[next++]
          await client.send(new PutObjectCommand({Bucket: server.bucket, Key: key, Body: body}))
        }
      }

      await Promise.all(Array.from({length: 16}, worker))
      // An object beside the prefix must not be listed.
      await client.send(new PutObjectCommand({Bucket: server.bucket, Key: 'paging-other/backup_x', Body: 'x'}))

      const proxy = await startRecordingProxy(() => server.port)
      const storage = await backend({S3_PREFIX: 'paging'}, proxy.endpoint)
      try {
        const listing = await listed(storage, '')
        expect(Object.keys(listing).sort()).toEqual(bodies.map(({key}) => key.slice('paging/'.length)).sort())
        expect(proxy.requests.filter((request) => request.method === 'GET' && request.url.includes('list-type=2'))).toHaveLength(2)

        const backups = await listBackups(storage)
        expect(backups.map((backup) => backup.id)).toEqual([...ids].reverse())
        const sidecarReads = proxy.requests.filter((request) => request.method === 'GET' && request.url.split('?')[0].endsWith('.meta.json'))
        expect(sidecarReads).toHaveLength(540)
        expect(proxy.maxInFlight).toBeGreaterThanOrEqual(8)

        // That listing wrote the sidecar index: the next one is the LIST and one GET, with the same answer.
        const before = proxy.requests.length
        expect((await listBackups(storage)).map((backup) => backup.id)).toEqual([...ids].reverse())
        const reads = proxy.requests.slice(before).filter((request) => request.method === 'GET' && !request.url.includes('list-type=2'))
        expect(reads.map((request) => request.url.split('?')[0])).toEqual([`/${server.bucket}/paging/${SIDECAR_INDEX_KEY}`])
      } finally {
        await proxy.close()
        await storage.close?.()
      }
    }, 120_000)

    describe('a failed upload', () => {
      let proxy: RecordingProxy

      beforeEach(async () => {
        proxy = await startRecordingProxy(() => server.port)
        quietLogger.warnings.length = 0
      })

      afterEach(async () => {
        await proxy.close()
      })

      it('sends AbortMultipartUpload and reports the original error, not the abort\'s', async () => {
        proxy.inject({
          match: (request) => request.method === 'PUT' && /[?&]partNumber=2(&|$)/.test(request.url),
          status: 403,
          code: 'QuotaExceeded',
          message: 'Bucket quota exceeded (injected by the test proxy)',
        })
        const storage = await backend({}, proxy.endpoint)
        const error = await storage.put('backup_20261121T040000Z.sql.gz', chunked(randomBytes(12 * MIB), MIB)).catch((caught: Error) => caught)
        expect(error).toBeInstanceOf(Error)
        expect((error as Error).message).toMatch(/failed: the storage quota of bucket "[\w-]+" at http:\/\/127\.0\.0\.1:\d+ is exceeded \(QuotaExceeded\)/)
        expect((error as Error).message).not.toMatch(/MethodNotAllowed/)
        const abort = proxy.requests.find((request) => request.method === 'DELETE' && request.url.includes('uploadId='))
        expect(abort).toBeDefined()
        if (capabilities.abortMultipartUpload) {
          // A real store removes the upload's parts: nothing is left to bill.
          expect(abort!.status).toBe(204)
          expect(quietLogger.warnings).toEqual([])
        } else {
          // s3rver does not implement it (405): logged as a warning, never surfaced.
          expect(abort!.status).toBe(405)
          expect(quietLogger.warnings).toEqual([expect.objectContaining({event: 's3.multipart_abort_failed', error: 'MethodNotAllowed'})])
        }
        await expect(storage.stat('backup_20261121T040000Z.sql.gz')).resolves.toBeUndefined()
        await storage.close?.()
      })

      it('aborts the multipart upload when the source stream fails, and reports the source error', async () => {
        const storage = await backend({}, proxy.endpoint)
        const source = chunked(randomBytes(11 * MIB), MIB, new Error('pg_dump failed (exit code 1)'))
        await expect(storage.put('backup_20261121T050000Z.sql.gz', source)).rejects.toThrow('pg_dump failed (exit code 1)')
        expect(proxy.requests.filter((request) => request.method === 'DELETE' && request.url.includes('uploadId='))).toHaveLength(1)
        await storage.close?.()
      })
    })

    it('stops a dump that outgrows S3_PART_SIZE × the part limit with a message saying what to change', async () => {
      const options = parseS3Settings(server.dbbEnv({S3_PREFIX: 'limit', S3_PART_SIZE: '5MiB'}))
      const error = await multipartPut({
        client: server.client(),
        options,
        objectKey: 'limit/backup_20261121T060000Z.sql.gz',
        key: 'backup_20261121T060000Z.sql.gz',
        body: chunked(randomBytes(11 * MIB), MIB),
        put: {},
        describe: (cause) => cause as Error,
        logger: quietLogger,
        maxParts: 2,
      }).catch((caught: Error) => caught)
      expect((error as Error).message).toBe('the dump exceeds 10 MiB, the most S3 stores in 2 parts of S3_PART_SIZE=5 MiB; set a larger S3_PART_SIZE')
      const storage = await backend({S3_PREFIX: 'limit'})
      await expect(storage.stat('backup_20261121T060000Z.sql.gz')).resolves.toBeUndefined()
    })

    it('writes with If-None-Match when an object must not be replaced, and maps 412 to ALREADY_EXISTS', async () => {
      const proxy = await startRecordingProxy(() => server.port)
      const [conditional, unconditional] = await Promise.all([
        backend({S3_PREFIX: 'cond'}, proxy.endpoint),
        backend({S3_PREFIX: 'cond', S3_CONDITIONAL_WRITES: 'false'}, proxy.endpoint),
      ])
      try {
        const puts = () => proxy.requests.filter((request) => request.method === 'PUT')
        await conditional.put('a.meta.json', Readable.from([Buffer.from('{}')]), {overwrite: false})
        expect(puts().at(-1)!.headers['if-none-match']).toBe('*')
        await unconditional.put('b.meta.json', Readable.from([Buffer.from('{}')]), {overwrite: false})
        expect(puts().at(-1)!.headers['if-none-match']).toBeUndefined()
        await conditional.put('c.meta.json', Readable.from([Buffer.from('{}')]))
        expect(puts().at(-1)!.headers['if-none-match']).toBeUndefined()

        // Another writer won the race between the existence check and the write: the store answers 412.
        proxy.inject({match: (request) => request.method === 'PUT', status: 412, code: 'PreconditionFailed', message: 'At least one of the pre-conditions you specified did not hold'})
        await expect(conditional.put('d.meta.json', Readable.from([Buffer.from('{}')]), {overwrite: false})).rejects.toMatchObject({
          code: 'ALREADY_EXISTS',
          message: 'd.meta.json already exists',
        })
      } finally {
        await proxy.close()
        await Promise.all([conditional.close?.(), unconditional.close?.()])
      }
    })

    describe('time bounds (S3_CONNECT_TIMEOUT, S3_REQUEST_TIMEOUT)', () => {
      const bounds = {S3_CONNECT_TIMEOUT: '1s', S3_REQUEST_TIMEOUT: '1s'}

      it('an endpoint that accepts connections and never answers: every operation fails in seconds, naming it', async () => {
        const silent = net.createServer(() => undefined)
        await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
        const endpoint = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`
        const storage = await backend(bounds, endpoint)
        try {
          const operations: [string, () => Promise<unknown>][] = [
            ['list', () => listed(storage, '')],
            ['stat', () => storage.stat('x.bin')],
            ['get', () => storage.get('x.bin')],
            ['put', () => storage.put('x.bin', Readable.from([Buffer.from('x')]))],
            ['delete', () => storage.delete('x.bin')],
            ['health', () => storage.health()],
          ]
          for (const [name, operation] of operations) {
            const started = Date.now()
            const error = await operation().then(() => undefined, (caught: Error) => caught)
            expect([name, error?.message]).toEqual([name, expect.stringContaining(`${endpoint} stopped answering: nothing received for 1 s (S3_REQUEST_TIMEOUT`)])
            // 3 attempts × 1 s, plus the SDK's backoff between them.
            expect(Date.now() - started).toBeLessThan(12_000)
          }
        } finally {
          await storage.close?.()
          silent.close()
        }
      }, 90_000)

      it('a server paused mid-download (SIGSTOP): the read fails within the bound, saying where and after how many bytes', async () => {
        const data = randomBytes(24 * MIB)
        const writer = await backend({S3_PREFIX: 'paused-get'})
        await writer.put('big.bin', chunked(data, MIB))
        const storage = await backend({S3_PREFIX: 'paused-get', ...bounds})
        const body = await storage.get('big.bin')
        let received = 0
        const started = {at: 0}
        try {
          const error = await (async () => {
            for await (const chunk of body) {
              received += (chunk as Buffer).length
              if (started.at === 0 && received > MIB) {
                await server.pause()
                started.at = Date.now()
              }
            }
          })().then(() => undefined, (caught: Error) => caught)
          expect(error?.message).toMatch(
            new RegExp(`download of paused-get/big\\.bin from ${server.endpoint.replace(/\./g, '\\.')} stalled: no bytes for 1 s after [\\d,]+ bytes \\(S3_REQUEST_TIMEOUT\\)`),
          )
          expect(received).toBeLessThan(data.length)
          expect(Date.now() - started.at).toBeLessThan(10_000)
        } finally {
          await server.resume()
          await Promise.all([writer.close?.(), storage.close?.()])
        }
      }, 90_000)

      it('a connection cut mid-download: says the connection to storage was lost, where, and after how many bytes', async () => {
        const data = randomBytes(24 * MIB)
        const writer = await backend({S3_PREFIX: 'cut-get'})
        await writer.put('big.bin', chunked(data, MIB))
        const proxy = await startRecordingProxy(() => server.port)
        const storage = await backend({S3_PREFIX: 'cut-get'}, proxy.endpoint)
        let received = 0
        const error = await (async () => {
          for await (const chunk of await storage.get('big.bin')) {
            received += (chunk as Buffer).length
            if (received > MIB) await proxy.close()
          }
        })().then(() => undefined, (caught: Error & {code?: string}) => caught)
        expect(error?.message).toMatch(
          new RegExp(`^download of cut-get/big\\.bin from ${proxy.endpoint.replace(/\./g, '\\.')} failed: the connection to storage was lost after [\\d,]+ bytes`),
        )
        expect(error).toMatchObject({code: 'STORAGE_CONNECTION_LOST'})
        expect(received).toBeLessThan(data.length)
        await Promise.all([writer.close?.(), storage.close?.()])
      }, 60_000)

      it('a reader that pauses longer than the bound is no failure while the server is fine', async () => {
        const data = randomBytes(12 * MIB)
        const storage = await backend({S3_PREFIX: 'slow-reader', ...bounds})
        await storage.put('big.bin', chunked(data, MIB))
        const body = await storage.get('big.bin')
        const chunks: Buffer[] = []
        for await (const chunk of body) {
          chunks.push(chunk as Buffer)
          // psql building an index: nothing read for 2.5 × S3_REQUEST_TIMEOUT.
          if (chunks.length === 2) await new Promise((resolve) => setTimeout(resolve, 2500))
        }

        expect(Buffer.concat(chunks).equals(data)).toBe(true)
        await storage.close?.()
      }, 60_000)

      it('a server paused mid-upload (SIGSTOP): the put fails within the bound, naming the endpoint, and nothing is listed', async () => {
        const storage = await backend({S3_PREFIX: 'paused-put', ...bounds})
        let sent = 0
        let pausedAt = 0
        const source = new Readable({
          read() {
            if (sent >= 64 * MIB) {
              this.push(null)
              return
            }

            sent += MIB
            if (sent === 8 * MIB) {
              void server.pause().then(() => {
                pausedAt = Date.now()
                this.push(randomBytes(MIB))
              })
              return
            }

            this.push(randomBytes(MIB))
          },
        })
        try {
          const error = await storage.put('big.bin', source).then(() => undefined, (caught: Error) => caught)
          expect(error?.message).toContain(`upload of paused-put/big.bin failed: the S3 endpoint ${server.endpoint} stopped answering`)
          // The part in flight (3 attempts) and the abort of the upload (3 attempts), 1 s each, plus backoff.
          expect(Date.now() - pausedAt).toBeLessThan(20_000)
        } finally {
          await server.resume()
        }

        await expect(storage.stat('big.bin')).resolves.toBeUndefined()
        await storage.close?.()
      }, 90_000)
    })

    describe('what the store does with If-None-Match (the README\'s conditional-write table)', () => {
      it(`PutObject onto an existing key: ${capabilities.conditionalPut ? '412, the object is kept' : 'the header is ignored, the object replaced'}`, async () => {
        const client = server.client()
        const Key = `conditional-${prefixCounter}/single.bin`
        await client.send(new PutObjectCommand({Bucket: server.bucket, Key, Body: 'first'}))
        const outcome = await client.send(new PutObjectCommand({Bucket: server.bucket, Key, Body: 'second', IfNoneMatch: '*'})).then(
          () => 'replaced',
          (error: {$metadata?: {httpStatusCode?: number}}) => error.$metadata?.httpStatusCode,
        )
        expect(outcome).toBe(capabilities.conditionalPut ? 412 : 'replaced')
      })

      it(`CompleteMultipartUpload onto an existing key: ${capabilities.conditionalCompleteMultipart ? '412' : 'the header is ignored, the object replaced'}`, async () => {
        const client = server.client()
        const options = parseS3Settings(server.dbbEnv({S3_PREFIX: 'conditional-mp', S3_PART_SIZE: '5MiB'}))
        await client.send(new PutObjectCommand({Bucket: server.bucket, Key: 'conditional-mp/multi.bin', Body: 'foreign'}))
        // Straight to the multipart writer: put() checks existence first, which hides this when sequential.
        const outcome = await multipartPut({
          client,
          options,
          objectKey: 'conditional-mp/multi.bin',
          key: 'multi.bin',
          body: chunked(randomBytes(11 * MIB), MIB),
          put: {overwrite: false},
          describe: (cause) => cause as Error,
          logger: quietLogger,
        }).then(
          () => 'replaced',
          (error: {code?: string}) => error.code,
        )
        expect(outcome).toBe(capabilities.conditionalCompleteMultipart ? 'ALREADY_EXISTS' : 'replaced')
      })
    })

    it(`sweep() ${capabilities.listMultipartUploads ? 'aborts incomplete multipart uploads older than the cut-off, never a younger one' : 'yields nothing where the store cannot list multipart uploads'}`, async () => {
      const client = server.client()
      const storage = (await backend({S3_PREFIX: 'sweep'})) as StorageBackend & Required<Pick<StorageBackend, 'sweep'>>
      const outside = await backend({S3_PREFIX: 'sweep-other'})
      const open = async (key: string) =>
        (await client.send(new CreateMultipartUploadCommand({Bucket: server.bucket, Key: key}))).UploadId!
      const uploads = () =>
        client
          .send(new ListMultipartUploadsCommand({Bucket: server.bucket}))
          .then((page) => (page.Uploads ?? []).map((upload) => upload.Key!).sort())
      if (!capabilities.listMultipartUploads) {
        await expect(storage.sweep(new Date())).resolves.toEqual([])
        return
      }

      await open('sweep/backup_20261121T030000Z.sql.gz')
      await open('sweep-other/backup_20261121T030000Z.sql.gz')
      await new Promise((resolve) => setTimeout(resolve, 1500))
      const cutOff = new Date(Date.now() - 500)
      await open('sweep/wal/young.gz')
      await open('sweep/backup_20261121T040000Z.sql.gz')

      // `only` (the start cleanup's dead writers): that key alone, whatever the cut-off; the others stay.
      await expect(storage.sweep(new Date(Date.now() + 60_000), {only: (key) => key === 'backup_20261121T040000Z.sql.gz'})).resolves.toEqual([
        expect.objectContaining({key: 'backup_20261121T040000Z.sql.gz'}),
      ])
      expect(await uploads()).not.toContain('sweep/backup_20261121T040000Z.sql.gz')
      expect(await uploads()).toEqual(expect.arrayContaining(['sweep/backup_20261121T030000Z.sql.gz', 'sweep/wal/young.gz']))

      await expect(storage.sweep(cutOff, {dryRun: true})).resolves.toEqual([
        {key: 'backup_20261121T030000Z.sql.gz', startedAt: expect.any(Date), sizeBytes: 0, kind: 'incomplete multipart upload'},
      ])
      expect(await uploads()).toEqual(expect.arrayContaining(['sweep/backup_20261121T030000Z.sql.gz', 'sweep/wal/young.gz']))
      await expect(storage.sweep(cutOff)).resolves.toEqual([expect.objectContaining({key: 'backup_20261121T030000Z.sql.gz'})])
      const left = await uploads()
      expect(left).not.toContain('sweep/backup_20261121T030000Z.sql.gz')
      // The young one (a writer may still own it) and the one outside this backend's prefix stay.
      expect(left).toEqual(expect.arrayContaining(['sweep/wal/young.gz', 'sweep-other/backup_20261121T030000Z.sql.gz']))
      await Promise.all([storage.close?.(), outside.close?.()])
    })

    describe('health() names what is wrong', () => {
      it('a missing bucket', async () => {
        const storage = await backend({S3_BUCKET: 'no-such-bucket'})
        await expect(storage.health()).rejects.toThrow(/bucket "no-such-bucket" does not exist at http:\/\/127\.0\.0\.1:\d+/)
      })

      it('an unknown access key', async () => {
        const storage = await backend({AWS_ACCESS_KEY_ID: 'AKIAUNKNOWNKEY', AWS_SECRET_ACCESS_KEY: 'wrong-secret-value'})
        const error = await storage.health().catch((caught: Error) => caught)
        expect((error as Error).message).toMatch(/access key is not known to http:\/\/127\.0\.0\.1:\d+ \(InvalidAccessKeyId\); check AWS_ACCESS_KEY_ID/)
        expect((error as Error).message).not.toContain('wrong-secret-value')
      })

      it('a virtual-hosted bucket name that does not resolve (S3_FORCE_PATH_STYLE=false): names the host that failed', async () => {
        const storage = await backend({S3_FORCE_PATH_STYLE: 'false'}, `http://localhost:${server.port}`)
        await expect(storage.health()).rejects.toThrow(`the host name ${server.bucket}.localhost (the bucket as a subdomain, virtual-hosted style) was not found`)
        await storage.close?.()
      })

      it('an unreachable endpoint, in seconds', async () => {
        const port = await freePort()
        const storage = await backend({}, `http://127.0.0.1:${port}`)
        const started = Date.now()
        await expect(storage.health()).rejects.toThrow(`cannot reach the S3 endpoint http://127.0.0.1:${port}: connection refused (ECONNREFUSED)`)
        expect(Date.now() - started).toBeLessThan(10_000)
      })
    })

    it('rejects bad settings with one line per variable', async () => {
      await expect(
        s3Provider.create({S3_PART_SIZE: '1MiB', S3_SSE: 'des', S3_ENDPOINT: 'ftp://x', AWS_ACCESS_KEY_ID: 'AKIA'}, {logger: quietLogger}),
      ).rejects.toMatchObject({
        name: 'StorageConfigError',
        issues: [
          expect.objectContaining({variable: 'S3_BUCKET'}),
          expect.objectContaining({variable: 'S3_ENDPOINT'}),
          expect.objectContaining({variable: 'AWS_SECRET_ACCESS_KEY'}),
          expect.objectContaining({variable: 'S3_SSE'}),
          expect.objectContaining({variable: 'S3_PART_SIZE'}),
        ],
      })
    })
  })

}

function sidecar(id: string, index: number) {
  return {
    id,
    type: 'logical',
    createdAt: new Date(Date.UTC(2026, 0, 1) + index * 60_000).toISOString(),
    sizeBytes: 4,
    sha256: '0'.repeat(64),
    durationMs: 10,
    triggeredBy: 'cli',
    database: 'app',
    pgVersion: '15.18',
    format: 'plain',
    compression: 'gzip',
  }
}
