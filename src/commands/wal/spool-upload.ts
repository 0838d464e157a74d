import {Args} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {Section} from '../../config'
import {ConfigError} from '../../errors'
import {settingFlagsFor} from '../../settings'
import type {StorageBackend} from '../../storage/contract'
import {UPLOADER_IDLE_EXIT_MS, runDetachedUploader} from '../../wal/spool'

export default class WalSpoolUpload extends DbbCommand<typeof WalSpoolUpload> {
  static override summary = `Upload the WAL spool that wal push --async fills, then exit once it stayed empty for ${UPLOADER_IDLE_EXIT_MS / 1000} seconds.`
  static override description = `Started in the background by dbb wal push --async when no uploader holds the spool (WAL_SPOOL_DIR); dbb serve runs the same uploader in-process. Stores up to WAL_ASYNC_PARALLEL files at once, oldest names first, and removes each from the spool only once storage holds it. Exits 0 at once when another process already uploads this spool.`

  static override hidden = true
  static override args = {
    walDir: Args.string({required: false, description: 'pg_wal of the server, whose ready segments are stored ahead of their push.'}),
  }

  static override flags = settingFlagsFor('wal spool-upload')
  static override configSections: readonly Section[] = ['storageBackend', 'walAsync']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<{stored: number}> {
    const {spoolDir, parallel} = this.settings.walAsync
    if (!spoolDir) throw new ConfigError([{variable: 'WAL_SPOOL_DIR', message: 'is required by wal spool-upload', example: '/var/lib/dbb/wal-async'}])
    let storage: StorageBackend | undefined
    try {
      const result = await runDetachedUploader({
        openStorage: async () => (storage = await this.openStorage()),
        spoolDir,
        parallel,
        logger: this.logger,
        signal: this.interruptSignal(),
        idleExitMs: UPLOADER_IDLE_EXIT_MS,
        walDir: this.args.walDir,
      })
      // Another uploader holds the spool: nothing to do here.
      return result ?? {stored: 0}
    } finally {
      await storage?.close?.()
    }
  }
}
