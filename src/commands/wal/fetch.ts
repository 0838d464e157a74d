import {Args} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {Section} from '../../config'
import {EXIT_WAL_FETCH_FATAL, NotFoundError} from '../../errors'
import {settingFlagsFor} from '../../settings'
import {fetchWal} from '../../wal/archive'
import {declareNotInArchive} from '../../wal/fetch-exit'

export default class WalFetch extends DbbCommand<typeof WalFetch> {
  static override summary = "Write an archived WAL file to a path: PostgreSQL's restore_command."
  static override description = `Reads wal/<name>.gz or wal/<name>.zst from storage, decompresses it and writes <dest> atomically (a temporary file renamed once complete). A file that is not in the archive exits 1 with at most one short line: PostgreSQL asks for files past the end of the archive on purpose, to learn where recovery ends.

Exit 1 only when storage positively answers "no such object" (or the name cannot be a WAL file). Every other failure — a damaged archived copy, storage unreachable, permission denied, a missing BACKUP_LOCAL_DIR, bad configuration, an unexpected error — exits ${EXIT_WAL_FETCH_FATAL}: PostgreSQL reads 1–125 as "end of the archive" and would promote without the later transactions, while above 125 it aborts recovery and keeps the server down with the error in its log.

dbb restore --type base writes this command into postgresql.auto.conf for you.`

  static override examples = [
    {description: 'As restore_command (postgresql.auto.conf)', command: "restore_command = '<%= config.bin %> <%= command.id %> %f %p'"},
  ]

  static override args = {
    name: Args.string({required: true, description: 'The WAL file name (%f), e.g. 000000010000000000000003 or 00000002.history.'}),
    dest: Args.string({required: true, description: 'Where to write it (%p).'}),
  }

  static override flags = settingFlagsFor('wal fetch')
  static override configSections: readonly Section[] = ['storageBackend', 'decryption']
  static override usesStorage = true
  static override stdoutIsReport = true
  static override failureExitCode = EXIT_WAL_FETCH_FATAL

  public async run(): Promise<{name: string; dest: string; found: boolean; sizeBytes?: number}> {
    const storage = await this.openStorage()
    try {
      const {identityFile} = this.settings.decryption
      // The prefetcher this may start reads the identity from the environment, as the fast path's does.
      if (identityFile !== undefined) process.env.AGE_IDENTITY_FILE = identityFile
      const {sizeBytes} = await fetchWal(storage, this.args.name, this.args.dest, {signal: this.interruptSignal(), logger: this.logger, identityFile})
      this.logger.debug({event: 'wal.fetched', wal: this.args.name, sizeBytes}, `restored ${this.args.name}`)
      return {name: this.args.name, dest: this.args.dest, found: true, sizeBytes}
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error
      // Expected at the end of every recovery: no stack trace, no error-level log, just the exit code.
      this.logger.debug({event: 'wal.not_found', wal: this.args.name}, error.message)
      declareNotInArchive()
      return {name: this.args.name, dest: this.args.dest, found: false}
    } finally {
      await storage.close?.()
    }
  }
}
