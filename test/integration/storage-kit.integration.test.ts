import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import type {StorageBackend, StorageProvider} from '../../src/storage/contract'
import {withTimeBound} from '../../src/storage/time-bound'
import {ROOT, tempDir} from '../helpers/cli'
import {storageConformanceSuite} from '../helpers/storage-conformance'

/**
 * The README's example plugin (test/fixtures/dbb-storage-flatfile, plain JavaScript, written the
 * way a third party would) through the published conformance kit, as its author would run it.
 */
const flatfileHook = require(path.join(ROOT, 'test', 'fixtures', 'dbb-storage-flatfile', 'hook.js')) as () => Promise<StorageProvider>
const logger = {debug() {}, info() {}, warn() {}}
const directories = new Map<StorageBackend, string>()
let provider: StorageProvider

beforeAll(async () => {
  provider = await flatfileHook()
})

storageConformanceSuite({
  name: 'dbb-storage-flatfile (the example plugin)',
  provider: flatfileHook,
  async create() {
    const directory = await tempDir('dbb-flatfile-')
    const backend = await provider.create({FLATFILE_DIR: directory}, {logger})
    directories.set(backend, directory)
    return backend
  },
  async destroy(backend) {
    await fs.rm(directories.get(backend)!, {recursive: true, force: true})
  },
  atomicNoOverwrite: true,
  sweeps: true,
  // A writer killed mid-write leaves its temp file: named with its start time, as the plugin names them.
  async leaveLeftover(backend, key) {
    await fs.writeFile(path.join(directories.get(backend)!, `.tmp-${Date.now()}-0a1b2c3d4e5f-${encodeURIComponent(key)}`), 'half a backup')
  },
})

/** What commands use is the backend wrapped in core's time bound: the wrapper must keep every rule. */
storageConformanceSuite({
  name: 'local, through core\'s time bound (src/storage/time-bound.ts)',
  async create() {
    const directory = await tempDir('dbb-bounded-')
    const backend = withTimeBound(new LocalBackend(directory), {plugin: '@dbb/storage-local'})
    directories.set(backend, directory)
    return backend
  },
  async destroy(backend) {
    await fs.rm(directories.get(backend)!, {recursive: true, force: true})
  },
  atomicNoOverwrite: true,
})
