import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {tempDir} from '../helpers/cli'
import {localStore} from '../helpers/crash-invariants'
import {describeCrashMatrix} from '../helpers/crash-matrix'

/**
 * The crash-point matrix (issue 11) with encryption (ENCRYPTION_RECIPIENTS, issue 20 item 4):
 * every command SIGKILLed at each phase boundary and mid-stream while `age` encrypts (the dump and
 * each WAL segment) or decrypts (wal fetch) beside it. The invariants are the same — nothing
 * partial listed, nothing lost, the next run cleans up — checked on the bytes with stock
 * `age -d` then `gzip -t` / gunzip, as an operator would.
 */
describeCrashMatrix('local storage, encrypted with age', async () => {
  const dir = await tempDir('dbb-crash-age-')
  const keys = await tempDir('dbb-crash-age-keys-')
  const identity = path.join(keys, 'key.txt')
  execFileSync('age-keygen', ['-o', identity], {stdio: 'ignore'})
  const recipient = execFileSync('age-keygen', ['-y', identity], {encoding: 'utf8'}).trim()
  const store = localStore(dir)
  return {
    store: {...store, env: {...store.env, ENCRYPTION_RECIPIENTS: recipient, AGE_IDENTITY_FILE: identity}},
    destroy: async () => {
      await fs.rm(dir, {recursive: true, force: true})
      await fs.rm(keys, {recursive: true, force: true})
    },
  }
})
