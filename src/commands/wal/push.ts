import {Args} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {Section} from '../../config'
import {settingFlags} from '../../settings'
import {PushResult, pushWal} from '../../wal/archive'

export default class WalPush extends DbbCommand<typeof WalPush> {
  static override summary = "Archive one WAL file into storage: PostgreSQL's archive_command."
  static override description = `Compresses the file and stores it as wal/<name>.gz in the storage backend; exits 0 only once it is durably stored, so PostgreSQL may then recycle the segment. Pushing a file that is already archived with identical content succeeds (PostgreSQL retries after crashes); different content under the same name fails with exit 1 and is never overwritten — that is how two servers archiving into one location (split-brain) show up. The archive also records the system identifier of the first cluster that pushed a segment (wal/system-identifier) and refuses segments of any other cluster.

Every failure exits non-zero (1; 2 for a name that is not WAL): PostgreSQL keeps the segment and retries archive_command, so nothing is lost while storage is down.

In postgresql.conf:  archive_mode = on,  archive_command = 'dbb wal push %p'. The storage settings (STORAGE_BACKEND, BACKUP_LOCAL_DIR or the S3 variables) come from the server's environment or from flags in the command.`

  static override examples = [
    {description: 'As archive_command (postgresql.conf)', command: "archive_command = '<%= config.bin %> <%= command.id %> %p'"},
    {description: 'By hand', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %> pg_wal/000000010000000000000003'},
  ]

  static override args = {
    path: Args.string({required: true, description: 'The WAL file (%p: relative to the data directory, where PostgreSQL runs the command).'}),
  }

  static override flags = settingFlags('STORAGE_BACKEND')
  static override configSections: readonly Section[] = ['storageBackend']
  static override usesStorage = true

  public async run(): Promise<PushResult> {
    const storage = await this.openStorage()
    try {
      const result = await pushWal(storage, this.args.path, {logger: this.logger, signal: this.interruptSignal()})
      this.log(`${result.outcome === 'stored' ? 'Archived' : 'Already archived (identical)'} ${result.name} as ${result.key} in ${storage.location}`)
      return result
    } finally {
      await storage.close?.()
    }
  }
}
