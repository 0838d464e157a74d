import {Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {scanBackups} from '../../backup/metadata'
import {databasePrefix} from '../../backup/naming'
import {ListedBackup, backupTable, listedBackups} from '../../backup/table'
import {Section} from '../../config'
import {drillsOf} from '../../drill/result'
import {EXIT_FAILURE} from '../../errors'
import {settingFlagsFor} from '../../settings'

export default class BackupList extends DbbCommand<typeof BackupList> {
  static override summary = 'List backups, newest first, with their status.'
  static override description = `Shows every backup in the storage location: each id with a sidecar (<id>.meta.json). STATUS is ok for a complete, verified backup; damaged when its sidecar is not valid metadata or its dump is missing or of another size than recorded; unreadable when reading its sidecar failed (a storage error, permission denied). Damaged and unreadable backups are listed with their cause on stderr and make the command exit 1. Dumps without a sidecar (in progress, failed, crashed) are never listed. With DB_NAMES, each database's ids carry its name (<prefix>_<encoded name>_<timestamp>); --db NAME lists one database's, --type globals the stored cluster globals. DRILL is the last restore drill of the backup (passed, failed, never; see dbb drill). Needs no database settings.`

  static override examples = [
    {description: 'A table of backups', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>'},
    {description: 'The backups as JSON (each with a status), for scripts', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    ...settingFlagsFor('backup list'),
    db: Flags.string({summary: "Only this database's backups (taken with DB_NAMES).", helpValue: 'NAME'}),
    type: Flags.string({options: ['logical', 'base', 'globals'], summary: 'Only backups of this type (logical: pg_dump; base: pg_basebackup).'}),
  }

  static override configSections: readonly Section[] = ['storageBackend', 'namePrefix']
  static override usesStorage = true

  public async run(): Promise<ListedBackup[]> {
    const storage = await this.openStorage()
    try {
      const prefix = this.flags.db === undefined ? undefined : databasePrefix(this.settings.namePrefix, this.flags.db)
      const listing = await scanBackups(storage, {prefix, type: this.flags.type as 'logical' | 'base' | 'globals' | undefined})
      const drills = await drillsOf(storage, listing)
      this.log(backupTable(listing, new Date(), drills))
      if (listing.damaged.length > 0) {
        // The listing stays on stdout (and in --json); the failure is the exit code and one line per backup on stderr.
        process.exitCode = EXIT_FAILURE
        for (const entry of listing.damaged) {
          this.logger.error({event: 'backup.damaged', backupId: entry.id, status: entry.status, cause: entry.cause}, `${entry.id} is ${entry.status}: ${entry.cause}`)
        }

        process.stderr.write(`Error: ${listing.damaged.length} backup(s) damaged or unreadable: ${listing.damaged.map(({id}) => id).join(', ')} (causes above)\n`)
      }

      return listedBackups(listing, drills)
    } finally {
      await storage.close?.()
    }
  }
}
