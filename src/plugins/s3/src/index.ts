import {defineStorageProvider} from '@dbb/storage-contract'
import type {StorageBackend, StorageProvider} from '@dbb/storage-contract'
import {S3_SETTINGS, parseS3Settings} from './settings'

export {S3_SETTINGS, parseByteSize, parseS3Settings} from './settings'
export type {S3Options} from './settings'

export const s3Provider: StorageProvider = defineStorageProvider({
  name: 's3',
  summary: 'AWS S3 or any S3-compatible object store (MinIO, Ceph, R2, Hetzner, …), multipart streaming uploads.',
  settings: S3_SETTINGS,
  async create(settings, context): Promise<StorageBackend> {
    const options = parseS3Settings(settings)
    // The SDK is pinned exactly (package.json); its Node-version warnings, should a future pin
    // print one, are not something a dbb user can act on.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
    // The AWS SDK takes a noticeable time to load; the hook runs on every command, so it is
    // loaded only here, when s3 is the selected backend.
    const {S3Backend} = await import('./s3-backend')
    return new S3Backend(options, context.logger)
  },
})

/** The oclif hook (`dbb:storage-provider`): answers with this plugin's provider. */
const hook = async (): Promise<StorageProvider> => s3Provider
export default hook
