import * as fs from 'node:fs/promises'

import {tempDir} from '../helpers/cli'
import {localStore} from '../helpers/crash-invariants'
import {describeCrashMatrix} from '../helpers/crash-matrix'

/**
 * The crash-point matrix (issue 11) with COMPRESSION=zstd (issue 15): every command SIGKILLed at
 * each phase boundary while the zstd program compresses (or decodes) beside it; the invariants are
 * the same (nothing partial listed, nothing lost, the next run cleans up), checked with `zstd -t`.
 */
describeCrashMatrix('local storage, COMPRESSION=zstd', async () => {
  const dir = await tempDir('dbb-crash-zstd-')
  const store = localStore(dir)
  return {store: {...store, env: {...store.env, COMPRESSION: 'zstd'}}, destroy: () => fs.rm(dir, {recursive: true, force: true})}
})
