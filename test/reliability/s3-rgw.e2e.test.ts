import {RGW_CAPABILITIES, destroySharedRgw, sharedRgw} from '../helpers/rgw'
import {s3BackendSuite} from '../helpers/s3-backend-suite'
import {s3FaultsSuite} from '../helpers/s3-faults-suite'
import {s3RoundtripSuite} from '../helpers/s3-roundtrip-suite'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

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
