import * as path from 'node:path'

import {Args, Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {Section} from '../../config'
import {settingFlagsFor} from '../../settings'
import {ConfigError} from '../../errors'
import {PushResult, pushWal} from '../../wal/archive'
import {CLI_ENTRY} from '../../wal/fast-cli'
import {QueueResult, ensureUploader, queueWal} from '../../wal/spool'

export default class WalPush extends DbbCommand<typeof WalPush> {
  static override summary = "Archive one WAL file into storage: PostgreSQL's archive_command."
  static override description = `Compresses the file and stores it as wal/<name>.gz (wal/<name>.zst with COMPRESSION=zstd) in the storage backend; exits 0 only once it is durably stored, so PostgreSQL may then recycle the segment. Pushing a file that is already archived with identical content succeeds (PostgreSQL retries after crashes); different content under the same name fails with exit 1 and is never overwritten — that is how two servers archiving into one location (split-brain) show up. The archive also records the system identifier of the first cluster that pushed a segment (wal/system-identifier) and refuses segments of any other cluster.

Every failure exits non-zero (1; 2 for a name that is not WAL): PostgreSQL keeps the segment and retries archive_command, so nothing is lost while storage is down.

With --async the file is only copied into the spool (WAL_SPOOL_DIR, fsynced) and a background uploader stores it; the exit is 0 once the copy is durable, and 1 while the spool holds WAL_SPOOL_MAX_SEGMENTS files (storage down or slow: PostgreSQL keeps the segment and retries).

In postgresql.conf:  archive_mode = on,  archive_command = 'dbb wal push %p'  (or 'dbb wal push --async %p'). The storage settings (STORAGE_BACKEND, BACKUP_LOCAL_DIR or the S3 variables) come from the server's environment or from flags in the command.`

  static override examples = [
    {description: 'As archive_command (postgresql.conf)', command: "archive_command = '<%= config.bin %> <%= command.id %> %p'"},
    {description: 'By hand', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %> pg_wal/000000010000000000000003'},
  ]

  static override args = {
    path: Args.string({required: true, description: 'The WAL file (%p: relative to the data directory, where PostgreSQL runs the command).'}),
  }

  static override flags = {
    ...settingFlagsFor('wal push'),
    async: Flags.boolean({summary: 'Queue the file in WAL_SPOOL_DIR (durably) and let a background uploader store it.'}),
  }

  static override configSections: readonly Section[] = ['storageBackend', 'walAsync']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<PushResult | QueueResult> {
    if (this.flags.async) {
      const {spoolDir, maxSegments} = this.settings.walAsync
      if (!spoolDir) throw new ConfigError([{variable: 'WAL_SPOOL_DIR', message: 'is required by wal push --async', example: '/var/lib/dbb/wal-async'}])
      // Before queueing, whatever its outcome: a full spool fails this push, and only an uploader
      // empties it (src/wal/fast-cli.ts, the same order).
      await ensureUploader(spoolDir, CLI_ENTRY, path.dirname(path.resolve(this.args.path)))
      const queued = await queueWal(this.args.path, {spoolDir, maxSegments})
      this.log(`${queued.outcome === 'queued' ? 'Queued' : queued.outcome === 'uploaded' ? 'Already stored by the uploader:' : 'Already queued (identical)'} ${queued.name} in ${spoolDir} (${queued.queuedFiles} waiting)`)
      return queued
    }

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
