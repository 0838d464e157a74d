import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {after, test} from 'node:test'

import {storageTestSuite} from '@dbb/storage-test-suite'
import type {StorageBackend} from '@dbb/storage-contract'

import hook, {provider} from '../src/index'

// Every rule of the storage contract, run by node's own test runner (any runner with test(name, fn) works).
const directories = new Map<StorageBackend, string>()
const logger = {debug() {}, info() {}, warn() {}}
after(() => Promise.all([...directories.values()].map((dir) => fs.rm(dir, {recursive: true, force: true}))))

storageTestSuite(test, {
  name: provider.name,
  provider: hook,
  async create() {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-storage-example-'))
    const backend = await provider.create({EXAMPLE_DIR: dir}, {logger})
    directories.set(backend, dir)
    return backend
  },
  atomicNoOverwrite: true,
  sweeps: true,
  async leaveLeftover(backend, key) {
    await fs.writeFile(path.join(directories.get(backend)!, `.tmp-${Date.now()}-000000000000-${encodeURIComponent(key)}`), 'half written')
  },
  // A backend that talks to a server also passes `unresponsive: (endpoint) => …` (see the kit's README).
})
