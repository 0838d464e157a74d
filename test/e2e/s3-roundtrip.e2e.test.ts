import {S3RVER_CAPABILITIES, startS3Server} from '../helpers/s3-server'
import {s3RoundtripSuite} from '../helpers/s3-roundtrip-suite'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

// The same suite runs against Ceph RGW in test/reliability/s3-rgw.e2e.test.ts.
s3RoundtripSuite('s3rver', S3RVER_CAPABILITIES, () => startS3Server())
