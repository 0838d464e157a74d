import {s3Store} from '../helpers/crash-invariants'
import {describeCrashMatrix} from '../helpers/crash-matrix'
import {startS3Server} from '../helpers/s3-server'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

/**
 * The crash-point matrix (issue 11) on S3: a real S3-protocol server (s3rver, its own process)
 * through the real AWS SDK; 5 MiB parts, so WAL segments and dumps go up as multipart uploads.
 */
describeCrashMatrix('S3 storage', async () => {
  const server = await startS3Server()
  return {store: s3Store(server, 'crash', {S3_PART_SIZE: '5MiB'}), destroy: () => server.destroy()}
})
