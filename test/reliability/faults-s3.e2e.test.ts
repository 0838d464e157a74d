import {S3RVER_CAPABILITIES, startS3Server} from '../helpers/s3-server'
import {s3FaultsSuite} from '../helpers/s3-faults-suite'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

// The same suite runs against Ceph RGW (kill, pause) in test/reliability/s3-rgw.e2e.test.ts.
s3FaultsSuite('s3rver', S3RVER_CAPABILITIES, () => startS3Server())
