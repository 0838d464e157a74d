import {Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {BackupMetadata, listBackups} from '../../backup/metadata'
import {backupTable} from '../../backup/table'
import {Section} from '../../config'
import {settingFlags} from '../../settings'

export default class BackupList extends DbbCommand<typeof BackupList> {
  static override summary = 'List complete backups, newest first.'
  static override description =
    'Shows every backup in the storage location that has its verified sidecar (<id>.meta.json). Dumps without one (in progress, failed, crashed) are never listed. Needs no database settings.'

  static override examples = [
    {description: 'A table of backups', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>'},
    {description: 'The metadata array, for scripts', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    ...settingFlags('STORAGE_BACKEND'),
    type: Flags.string({options: ['logical', 'base'], summary: 'Only backups of this type (logical: pg_dump; base: pg_basebackup).'}),
  }

  static override configSections: readonly Section[] = ['storageBackend']
  static override usesStorage = true

  public async run(): Promise<BackupMetadata[]> {
    const storage = await this.openStorage()
    try {
      const backups = await listBackups(storage, {
        type: this.flags.type as 'logical' | 'base' | undefined,
        onInvalid: (id, error) => this.logger.warn({event: 'backup.invalid_sidecar', backupId: id, error: String(error)}, 'skipping unreadable sidecar'),
      })
      this.log(backupTable(backups))
      return backups
    } finally {
      await storage.close?.()
    }
  }
}
