import {S3RVER_CAPABILITIES, startS3Server} from '../helpers/s3-server'
import {s3BackendSuite} from '../helpers/s3-backend-suite'

// The SDK warns about old Node versions on every client; the versions are pinned (see HARNESS.md).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

// The same suite runs against Ceph RGW in test/reliability/s3-rgw.e2e.test.ts.
s3BackendSuite('s3rver', S3RVER_CAPABILITIES, () => startS3Server())
