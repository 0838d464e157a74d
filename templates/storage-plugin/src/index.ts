import * as path from 'node:path'

import {defineStorageProvider, storageConfigError} from '@dbb/storage-contract'
import type {StorageProvider} from '@dbb/storage-contract'

/**
 * The provider dbb finds through the `dbb:storage-provider` hook (package.json `oclif.hooks`).
 * `STORAGE_BACKEND=example` selects it; its settings become environment variables and flags of
 * every dbb command that uses storage. Rename `example`/`EXAMPLE_*` to your store's name.
 */
export const provider: StorageProvider = defineStorageProvider({
  name: 'example',
  summary: 'One file per object in a directory (template backend).',
  settings: [{env: 'EXAMPLE_DIR', flag: 'example-dir', summary: 'Directory that holds the objects.', example: '/srv/backups', required: true}],
  async create(settings) {
    if (!settings.EXAMPLE_DIR) throw storageConfigError([{variable: 'EXAMPLE_DIR', message: 'is required with STORAGE_BACKEND=example', example: '/srv/backups'}])
    // Load heavy SDKs here, not at the top: the hook runs on every dbb command.
    const {ExampleBackend} = await import('./backend')
    return new ExampleBackend(path.resolve(settings.EXAMPLE_DIR))
  },
})

const hook = async (): Promise<StorageProvider> => provider
export default hook
