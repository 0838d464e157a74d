import {Flags} from '@oclif/core'

import {DbbCommand} from '../base-command'
import {PruneResult, describeDamaged, prune} from '../backup/prune'
import {Section} from '../config'
import {databasePrefix, globalsPrefix} from '../backup/naming'
import {EXIT_FAILURE} from '../errors'
import {formatBytes, renderTable} from '../format'
import {settingFlagsFor} from '../settings'
import {retentionRefused} from '../notify/backup-events'

export default class Prune extends DbbCommand<typeof Prune> {
  static override summary = 'Delete backups outside the retention rules, and leftovers of failed backups.'
  static override description = `Deletes backups (with this BACKUP_NAME_PREFIX) older than RETENTION_DAYS and beyond the BACKUPS_TO_RETAIN newest, but never the most recent complete backup. BACKUP_KEEP_DAYS/WEEKS/MONTHS also keep the newest backup of each recent day, ISO week and month (prodrigestivill's rules); --dry-run lists each kept backup with the rules that keep it. Also removes objects that belong to no backup (a dump without its sidecar, a partial write after a crash) once nothing was written under their id for ORPHAN_GRACE (a running backup refreshes its claim, so it is never swept).

A backup whose sidecar exists but cannot be read (storage error, invalid JSON) or whose dump is missing or of another size is damaged: it is never deleted and does not count towards BACKUPS_TO_RETAIN; archived WAL is kept while a base backup is unreadable. The rest is pruned, each damaged backup is reported, and the command exits 1.`

  static override examples = [
    {description: 'See what would be deleted', command: '<%= config.bin %> <%= command.id %> --dry-run'},
    {description: 'Keep 14 days, at most 10 backups', command: 'RETENTION_DAYS=14 BACKUPS_TO_RETAIN=10 <%= config.bin %> <%= command.id %>'},
    {description: 'One database of DB_NAMES, explaining what each tier keeps', command: 'BACKUP_KEEP_WEEKS=4 <%= config.bin %> <%= command.id %> --db billing --dry-run'},
  ]

  static override flags = {
    ...settingFlagsFor('prune'),
    'dry-run': Flags.boolean({summary: 'Print what would be deleted without deleting anything.'}),
    db: Flags.string({summary: "DB_NAMES backups: prune this database's backups (its own prefix) instead of BACKUP_NAME_PREFIX's.", helpValue: 'NAME', exclusive: ['globals']}),
    globals: Flags.boolean({summary: 'Prune the stored cluster globals (BACKUP_GLOBALS) instead of BACKUP_NAME_PREFIX\'s backups.'}),
  }

  static override configSections: readonly Section[] = ['namePrefix', 'retention', 'storageBackend', 'notify']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<PruneResult> {
    const storage = await this.openStorage()
    try {
      const result = await prune(storage, {
        prefix: this.flags.globals ? globalsPrefix(this.settings.namePrefix) : this.flags.db === undefined ? this.settings.namePrefix : databasePrefix(this.settings.namePrefix, this.flags.db),
        rules: this.settings.retention,
        dryRun: this.flags['dry-run'],
        logger: this.logger,
      })
      const verb = result.dryRun ? 'Would delete' : 'Deleted'
      const kept = `${result.kept} backup(s) kept${result.damaged.length > 0 ? `, and ${result.damaged.length} damaged or unreadable one(s) left alone` : ''}.`
      if (result.deleted.length === 0) {
        this.log(`Nothing to delete; ${kept}`)
      } else {
        this.log(`${verb} ${result.deleted.length} object(s); ${kept}`)
        this.log(
          renderTable(
            ['ID', 'KIND', 'SIZE', 'REASON'],
            result.deleted.map((entry) => [entry.id, entry.kind, formatBytes(entry.sizeBytes), entry.reason]),
          ),
        )
      }

      if (result.dryRun && result.keptBackups.length > 0) {
        this.log(`\nKept, and why:`)
        this.log(renderTable(['ID', 'KEPT BECAUSE'], result.keptBackups.map((entry) => [entry.id, entry.reasons.join('; ')])))
      }

      if (result.damaged.length > 0) {
        process.exitCode = EXIT_FAILURE
        this.notify(retentionRefused(storage.location, result.damaged))
        // On stderr with --json too: stdout stays the result, the reason for the exit code is still said.
        process.stderr.write(`Error: ${describeDamaged(result.damaged)}\n`)
      }

      return result
    } finally {
      await storage.close?.()
    }
  }
}
