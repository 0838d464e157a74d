import * as fs from 'node:fs/promises'

import {tempDir} from '../helpers/cli'
import {localStore} from '../helpers/crash-invariants'
import {describeCrashMatrix} from '../helpers/crash-matrix'

/** The crash-point matrix (issue 11) on the local backend: a real directory, a real PostgreSQL. */
describeCrashMatrix('local storage', async () => {
  const dir = await tempDir('dbb-crash-store-')
  return {store: localStore(dir), destroy: () => fs.rm(dir, {recursive: true, force: true})}
})
