import {spawn, spawnSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {removeDeadFetchesFiles, temporaryFileFor} from '../../src/wal/fetch-exit'
import {tempDir} from '../helpers/cli'

/**
 * The sweep of killed fetches' temporary files (src/wal/fetch-exit.ts) on a real directory, with
 * real processes: only `<name>.<pid>-<tag>.dbb-partial` of a pid that no longer runs goes; what
 * PostgreSQL keeps in pg_wal, other dbb temporary files and live processes' files stay.
 */
describe('removeDeadFetchesFiles', () => {
  it("removes only dead processes' fetch temporary files, once per directory", async () => {
    const dir = await tempDir('dbb-fetch-leftovers-')
    const deadPid = spawnSync('true').pid
    const sleeper = spawn('sleep', ['30'], {stdio: 'ignore'})
    try {
      const dead = [`RECOVERYXLOG.${deadPid}-1.dbb-partial`, `RECOVERYXLOG.${deadPid}-queued.dbb-partial`, `00000002.history.${deadPid}-3.dbb-partial`]
      const kept = [
        '000000010000000000000003',
        '00000002.history',
        'archive_status',
        `RECOVERYXLOG.${sleeper.pid}-1.dbb-partial`, // a running process's (EPERM or alive)
        path.basename(temporaryFileFor(path.join(dir, 'RECOVERYXLOG'), '1')), // this process's own
        '000000010000000000000004.dbb-partial', // the spool's and the prefetch queue's own naming
        'RECOVERYXLOG.dbb-partial', // backup download's
        `RECOVERYXLOG.${deadPid}-1.dbb-partial.keep`,
      ]
      for (const name of [...dead, ...kept]) await fs.writeFile(path.join(dir, name), name)

      expect((await removeDeadFetchesFiles(dir)).sort()).toEqual(dead.sort())
      expect((await fs.readdir(dir)).sort()).toEqual(kept.sort())

      // Once per directory and process: a second leftover is the next process's to remove.
      await fs.writeFile(path.join(dir, dead[0]), 'again')
      expect(await removeDeadFetchesFiles(dir)).toEqual([])
      expect(await removeDeadFetchesFiles(path.join(dir, 'missing'))).toEqual([])
    } finally {
      sleeper.kill('SIGKILL')
      await fs.rm(dir, {recursive: true, force: true})
    }
  })
})
