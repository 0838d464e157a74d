import * as fs from 'node:fs'
import * as path from 'node:path'

import type {StorageProvider} from '../../../storage/contract'
import {LocalBackend} from './local-backend'

export {LocalBackend, isSafeKey, PARTIAL_SUFFIX} from './local-backend'

class StorageConfigError extends Error {
  override readonly name = 'StorageConfigError'
  constructor(readonly issues: {variable: string; message: string; example?: string}[]) {
    super(issues.map((issue) => `${issue.variable}: ${issue.message}`).join('\n'))
  }
}

export const localProvider: StorageProvider = {
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
    if (!directory) {
      throw new StorageConfigError([
        {variable: 'BACKUP_LOCAL_DIR', message: 'is required with STORAGE_BACKEND=local', example: '/var/backups/postgres'},
      ])
    }

    const root = path.resolve(directory)
    if (fs.existsSync(root) && !fs.statSync(root).isDirectory()) {
      throw new StorageConfigError([{variable: 'BACKUP_LOCAL_DIR', message: `${root} is not a directory`, example: '/var/backups/postgres'}])
    }

    return new LocalBackend(root)
  },
}

/** The oclif hook (`dbb:storage-provider`): answers with this plugin's provider. */
const hook = async (): Promise<StorageProvider> => localProvider
export default hook
