import {Args, Flags} from '@oclif/core'

import {DbbCommand} from '../base-command'
import {BackupMetadata, listBackups, resolveBackup} from '../backup/metadata'
import {backupTable} from '../backup/table'
import {DatabaseConfig, Section, loadConfig} from '../config'
import {formatBytes} from '../format'
import {ProgressReporter, createProgress} from '../progress'
import type {BaseRestoreOutcome} from '../restore/base'
import {BASE_RESTORE_FLAGS, runBaseRestore} from '../restore/base-cli'
import {countdown, describePlan, requireConfirmation} from '../restore/confirm'
import {checkDatabaseName} from '../restore/database'
import {RestoreOutcome, restoreLogical} from '../restore/logical'
import {DATABASE_SETTINGS, setting, settingFlags, valuesByVariable} from '../settings'
import type {StorageBackend} from '../storage/contract'

export default class Restore extends DbbCommand<typeof Restore> {
  static override summary = 'Restore a backup into a database, replacing it; without an argument, list the backups.'
  static override description = `Reads the backup straight from the storage backend, verifies its sha256 against the sidecar before touching the database, then terminates other sessions on the target database, drops and recreates it, and streams the dump through gunzip into psql --single-transaction -v ON_ERROR_STOP=1. Any error rolls the whole import back and leaves the database empty.

On a terminal it shows what it is about to do and counts down 5 seconds (Ctrl-C aborts with nothing changed). Without a terminal it refuses unless --force is given. "latest" is the newest logical backup whose id starts with BACKUP_NAME_PREFIX.`

  static override examples = [
    {description: 'List the backups', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Replace DB_NAME with the newest backup, after a 5-second countdown', command: '<%= config.bin %> <%= command.id %> latest'},
    {
      description: 'A restore drill into a scratch database, unattended',
      command: '<%= config.bin %> <%= command.id %> backup_20261121T030000Z.sql.gz --target-db app_drill --force --json',
    },
  ]

  static override args = {
    backup: Args.string({required: false, description: 'A backup id, or "latest". Omit to list the backups.'}),
  }

  static override flags = {
    ...settingFlags('DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD', 'BACKUP_NAME_PREFIX', 'STORAGE_BACKEND'),
    'target-db': Flags.string({
      summary: 'Restore into this database instead of DB_NAME (created when missing).',
      helpValue: 'NAME',
    }),
    force: Flags.boolean({summary: 'Start without the 5-second countdown; required when stdin is not a terminal.'}),
    ...BASE_RESTORE_FLAGS,
  }

  // Database settings are validated only when restoring, so listing needs storage settings alone.
  static override configSections: readonly Section[] = ['namePrefix', 'storageBackend']
  static override usesStorage = true

  public async run(): Promise<BackupMetadata[] | RestoreOutcome | BaseRestoreOutcome> {
    const reference = this.args.backup
    if (this.flags.type === 'base' && reference !== undefined) {
      const storage = await this.openStorage()
      try {
        const context = {config: this.config, storage, storageBackend: this.settings.storageBackend, prefix: this.settings.namePrefix}
        return await runBaseRestore({...context, reference, flags: this.flags, logger: this.logger, signal: this.interruptSignal(), log: (line) => this.log(line)})
      } finally {
        await storage.close?.()
      }
    }

    const target = this.flags['target-db'] === undefined ? undefined : checkDatabaseName(this.flags['target-db'])
    const database = reference === undefined ? undefined : this.databaseConfig(target)
    const storage = await this.openStorage()
    try {
      if (reference === undefined || database === undefined) {
        const backups = await listBackups(storage)
        this.log(backupTable(backups))
        if (backups.length > 0) this.log(`\nRestore one with: ${this.config.bin} restore <id|latest>`)
        return backups
      }

      return await this.restore(storage, reference, database)
    } finally {
      await storage.close?.()
    }
  }

  private async restore(storage: StorageBackend, reference: string, database: DatabaseConfig): Promise<RestoreOutcome> {
    const target = database.database
    requireConfirmation({force: this.flags.force, interactive: Boolean(process.stdin.isTTY), target})
    const signal = this.interruptSignal()
    const backup = await resolveBackup(storage, reference, {prefix: this.settings.namePrefix, type: 'logical'})
    this.logToStderr(describePlan(backup, database, target, storage.location))
    this.logger.info(
      {event: 'restore.started', backupId: backup.id, database: target, host: database.host, port: database.port, force: this.flags.force},
      `restoring ${backup.id} into ${target}`,
    )
    if (!this.flags.force) await countdown(process.stderr, signal)

    const verifying = createProgress({label: `verifying ${backup.id}`, logger: this.logger, event: 'restore.verify_progress', totalBytes: backup.sizeBytes})
    // Created when the import starts, so its rate counts import time only.
    let restoring: ProgressReporter | undefined
    try {
      const outcome = await restoreLogical(
        {database, storage, logger: this.logger},
        {
          backup,
          targetDatabase: target,
          signal,
          onVerifyProgress: (bytes) => verifying.update(bytes),
          onProgress: ({readBytes, restoredBytes}) => restoring?.update(restoredBytes, {readBytes}),
          onStep: (step) => {
            if (step === 'verified') verifying.finish()
            else restoring = createProgress({label: `restoring into ${target}`, logger: this.logger, event: 'restore.progress', totalBytes: backup.uncompressedBytes})
          },
        },
      )
      restoring?.finish()
      this.log(
        `Restored ${outcome.id} into database "${target}" on ${outcome.host}:${outcome.port}: ` +
          `${formatBytes(outcome.restoredBytes)} of SQL in ${(outcome.durationMs / 1000).toFixed(1)} s (sha256 verified)`,
      )
      return outcome
    } finally {
      verifying.finish()
      restoring?.finish()
    }
  }

  /** DB_* settings, validated now; --target-db replaces DB_NAME (and stands in for it when DB_NAME is unset). */
  private databaseConfig(target: string | undefined): DatabaseConfig {
    const values = valuesByVariable(
      DATABASE_SETTINGS.map((name) => setting(name)),
      this.flags,
    )
    return loadConfig(['database'], {...values, DB_NAME: target ?? values.DB_NAME}).database
  }
}
