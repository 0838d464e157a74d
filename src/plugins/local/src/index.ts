import * as fs from 'node:fs'
import * as path from 'node:path'

import {defineStorageProvider, storageConfigError} from '@dbb/storage-contract'
import type {StorageProvider} from '@dbb/storage-contract'
import {LocalBackend} from './local-backend'

export {isSafeKey} from '@dbb/storage-contract'
export {LocalBackend, PARTIAL_SUFFIX} from './local-backend'

const EXAMPLE_DIR = '/var/backups/postgres'

export const localProvider: StorageProvider = defineStorageProvider({
  name: 'local',
  summary: 'A directory on a local or mounted filesystem (a Docker volume, NFS, a PVC).',
  settings: [
    {
      env: 'BACKUP_LOCAL_DIR',
      flag: 'local-dir',
      summary: 'Directory that holds the backups (storage "local"); must exist and be writable.',
      example: '/var/backups/postgres',
      required: true,
    },
  ],
  async create(settings) {
    const directory = settings.BACKUP_LOCAL_DIR
    if (!directory) throw storageConfigError([{variable: 'BACKUP_LOCAL_DIR', message: 'is required with STORAGE_BACKEND=local', example: EXAMPLE_DIR}])

    const root = path.resolve(directory)
    if (fs.existsSync(root) && !fs.statSync(root).isDirectory()) {
      throw storageConfigError([{variable: 'BACKUP_LOCAL_DIR', message: `${root} is not a directory`, example: EXAMPLE_DIR}])
    }

    return new LocalBackend(root)
  },
})

/** The oclif hook (`dbb:storage-provider`): answers with this plugin's provider. */
const hook = async (): Promise<StorageProvider> => localProvider
export default hook
