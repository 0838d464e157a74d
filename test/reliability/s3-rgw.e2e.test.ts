import {ListMultipartUploadsCommand} from '@aws-sdk/client-s3'
import {randomBytes} from 'node:crypto'

import {s3Provider} from '../../src/plugins/s3/src/index'
import {RGW_CAPABILITIES, destroySharedRgw, sharedRgw} from '../helpers/rgw'
import {s3BackendSuite} from '../helpers/s3-backend-suite'
import {s3FaultsSuite} from '../helpers/s3-faults-suite'
import {s3RoundtripSuite} from '../helpers/s3-roundtrip-suite'
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
