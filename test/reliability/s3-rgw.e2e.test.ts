import {ListMultipartUploadsCommand} from '@aws-sdk/client-s3'
import {randomBytes} from 'node:crypto'

import {s3Provider} from '../../src/plugins/s3/src/index'
import {runCli} from '../helpers/cli'
import {backupSucceeds} from '../helpers/fault-invariants'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {startRecordingProxy} from '../helpers/recording-proxy'
import {RGW_CAPABILITIES, destroySharedRgw, sharedRgw} from '../helpers/rgw'
import {s3BackendSuite} from '../helpers/s3-backend-suite'
import {s3FaultsSuite} from '../helpers/s3-faults-suite'
import {s3RoundtripSuite} from '../helpers/s3-roundtrip-suite'
import {S3Server} from '../helpers/s3-server'
import {chunked, listed} from '../helpers/storage-conformance'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'
const MIB = 1024 * 1024
const silentLogger = {debug() {}, info() {}, warn() {}}

/**
 * The S3 suites that s3rver runs (conformance + backend, commands end to end, fault matrix), here
 * against Ceph RADOS Gateway, a production S3 implementation that verifies signatures, aborts and
 * lists multipart uploads and honours conditional PutObject. ONE cluster for the whole file
 * (≈ 25 s to start, ≈ 500 MB): every suite gets its own bucket. If RGW cannot be installed or
 * started, every test here fails with the daemons' log tails; nothing is skipped.
 */
afterAll(async () => {
  await destroySharedRgw()
}, 60_000)

describe('Ceph RGW', () => {
  s3BackendSuite('Ceph RGW', RGW_CAPABILITIES, async () => (await sharedRgw()).bucket('dbb-backend'))
  s3RoundtripSuite('Ceph RGW', RGW_CAPABILITIES, async () => (await sharedRgw()).bucket('dbb-roundtrip'))
  s3FaultsSuite('Ceph RGW', RGW_CAPABILITIES, async () => (await sharedRgw()).bucket('dbb-faults'))
})

describe('Ceph RGW only: a bucket quota', () => {
  it('an upload past the quota fails naming the quota, and leaves no object and no open multipart upload', async () => {
    const rgw = await sharedRgw()
    const server = await rgw.bucket('dbb-quota')
    await rgw.admin('quota', 'set', '--quota-scope=bucket', '--bucket=dbb-quota', '--max-size=4194304')
    await rgw.admin('quota', 'enable', '--quota-scope=bucket', '--bucket=dbb-quota')
    const storage = await s3Provider.create(server.dbbEnv({S3_PREFIX: 'quota', S3_PART_SIZE: '5MiB'}), {logger: silentLogger})
    try {
      const error = await storage.put('backup_20261121T030000Z.sql.gz', chunked(randomBytes(12 * MIB), MIB)).then(
        () => undefined,
        (caught: Error) => caught,
      )
      expect(error?.message).toMatch(/upload of quota\/backup_20261121T030000Z\.sql\.gz failed: the storage quota of bucket "dbb-quota" at http:\/\/127\.0\.0\.1:\d+ is exceeded \(QuotaExceeded\)/)
      expect(await listed(storage, '')).toEqual({})
      const open = await server.client().send(new ListMultipartUploadsCommand({Bucket: server.bucket}))
      expect(open.Uploads ?? []).toEqual([])
    } finally {
      await storage.close?.()
    }
  })
})

describe('Ceph RGW only: the gateway paused or killed mid-restore', () => {
  let cluster: PgCluster
  let server: S3Server

  beforeAll(async () => {
    ;[cluster, server] = await Promise.all([startPostgres(), sharedRgw().then((rgw) => rgw.bucket('dbb-restore'))])
    await cluster.psql('CREATE DATABASE big')
    await cluster.psql(
      `CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS payload FROM generate_series(1, 200000) g`,
      'big',
    )
    await backupSucceeds({...cluster.dbbEnv('big'), ...server.dbbEnv({S3_PREFIX: 'restore'})})
  }, 300_000)

  afterAll(async () => {
    await server?.resume()
    await server?.start()
    await cluster?.destroy()
  })

  it.each([
    ['paused (SIGSTOP)', 'pause'],
    ['killed (SIGKILL)', 'kill'],
  ])('gateway %s when the dump is requested: restore fails in seconds naming the endpoint; the target gets no rows', async (_label, fault) => {
    const target = `drill_${fault}`
    const proxy = await startRecordingProxy(() => server.port)
    let faulted: Promise<void> | undefined
    proxy.onRequest((request) => {
      if (!faulted && request.method === 'GET' && /\/restore\/backup_\d{8}T\d{6}Z\.sql\.gz(\?|$)/.test(request.url)) {
        faulted = fault === 'pause' ? server.pause() : server.stop()
        // Held until the gateway is stopped or dead: forwarded at once, a dump of a few MB was
        // sometimes served whole before SIGKILL landed, and the restore rightly succeeded.
        return faulted
      }
    })
    const env = {
      ...cluster.dbbEnv('big'),
      ...server.dbbEnv({S3_PREFIX: 'restore', S3_CONNECT_TIMEOUT: '1s', S3_REQUEST_TIMEOUT: '2s'}, proxy.endpoint),
    }
    const started = Date.now()
    const result = await runCli(['restore', 'latest', '--target-db', target, '--force'], env).finally(async () => {
      await faulted
      await server.resume()
      await server.start()
      await proxy.close()
    })
    expect(faulted).toBeDefined()
    expect(result.code).not.toBe(0)
    expect(result.stderr).toContain(proxy.endpoint)
    expect(Date.now() - started).toBeLessThan(60_000)
    const exists = (await cluster.psql(`SELECT count(*) FROM pg_database WHERE datname = '${target}'`)).trim()
    if (exists === '1') {
      expect((await cluster.psql(`SELECT count(*) FROM pg_tables WHERE tablename = 'blobs'`, target)).trim()).toBe('0')
    }
  }, 180_000)
})
