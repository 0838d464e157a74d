import {Args, Flags} from '@oclif/core'

import {DbbCommand} from '../base-command'
import {BackupMetadata, resolveBackup} from '../backup/metadata'
import {scanWithDrills} from '../drill/result'
import {backupTable} from '../backup/table'
import {DatabaseConfig, SECTION_SETTINGS, Section, loadConfig} from '../config'
import {formatBytes} from '../format'
import {createProgress} from '../progress'
import type {BaseRestoreOutcome} from '../restore/base'
import {BASE_RESTORE_FLAGS, runBaseRestore} from '../restore/base-cli'
import {countdown, describePlan, requireConfirmation} from '../restore/confirm'
import {checkDatabaseName} from '../restore/database'
import {RestoreOutcome, executeLogicalRestore, planLogicalRestore} from '../restore/logical'
import {ArchiveListing, requirePgRestoreFor} from '../restore/archive'
import {listArchive} from '../restore/import'
import {UsageError} from '../errors'
import {prepareDecryption} from '../encrypt/age'
import {setting, settingFlagsFor, valuesByVariable} from '../settings'
import {GlobalsRestoreResult, resolveGlobals, restoreGlobals} from '../restore/globals'
import {GLOBALS_TYPE} from '../backup/globals'
import {databasePrefix} from '../backup/naming'
import type {StorageBackend} from '../storage/contract'

export default class Restore extends DbbCommand<typeof Restore> {
  static override summary = 'Restore a backup into a database, replacing it; without an argument, list the backups.'
  static override description = `Streams the backup from storage once, through sha256 and gunzip, into psql -v ON_ERROR_STOP=1 connected to a new staging database on the same server; the target database is not touched and stays in use meanwhile. Only when psql succeeded and the sha256 matches the sidecar does it swap, in one transaction: the target's sessions are terminated, the target is renamed away and the staging database takes its name. Then the replaced database is dropped (or kept with --keep-previous). Any failure, Ctrl-C or kill before the swap leaves the target exactly as it was; the next restore drops staging databases that crashed restores left behind.

A custom-format backup (BACKUP_FORMAT=custom, ids ending in .dump.gz or .dump.zst) is imported the same way by pg_restore --exit-on-error reading the stream; --jobs N restores in parallel from a temporary file in TMPDIR (said when written, removed afterwards), --table/--schema restore a part into a new database only, and --list prints the archive's table of contents.

On a terminal it shows what it is about to do and counts down 5 seconds (Ctrl-C aborts with nothing changed). Without a terminal it refuses unless --force is given. "latest" is the newest logical backup whose id starts with BACKUP_NAME_PREFIX.`

  static override examples = [
    {description: 'List the backups', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Replace DB_NAME with the newest backup, after a 5-second countdown', command: '<%= config.bin %> <%= command.id %> latest'},
    {
      description: 'DB_NAMES: the newest backup of the database "billing", into "billing"',
      command: '<%= config.bin %> <%= command.id %> latest --db billing',
    },
    {
      description: 'Onto a new server: create the missing roles from the stored globals, then restore "app"',
      command: '<%= config.bin %> <%= command.id %> latest --db app --globals --force',
    },
    {description: 'A custom-format backup, 4 pg_restore jobs', command: '<%= config.bin %> <%= command.id %> latest --jobs 4 --force'},
    {description: 'One table of a custom-format backup, into a new database', command: '<%= config.bin %> <%= command.id %> latest --table orders --target-db salvage --force'},
    {description: "A custom-format backup's table of contents", command: '<%= config.bin %> <%= command.id %> latest --list --json'},
    {description: 'Only create the missing roles (from the newest globals)', command: '<%= config.bin %> <%= command.id %> --globals'},
    {
      description: 'A restore drill into a scratch database, unattended',
      command: '<%= config.bin %> <%= command.id %> backup_20261121T030000Z.sql.gz --target-db app_drill --force --json',
    },
  ]

  static override args = {
    backup: Args.string({required: false, description: 'A backup id, or "latest". Omit to list the backups.'}),
  }

  static override flags = {
    ...settingFlagsFor('restore'),
    'target-db': Flags.string({
      summary: 'Restore into this database instead of DB_NAME (created when missing).',
      helpValue: 'NAME',
    }),
    db: Flags.string({
      summary: "DB_NAMES backups: this database's backups (latest is its newest), restored into it unless --target-db.",
      helpValue: 'NAME',
    }),
    globals: Flags.boolean({
      summary:
        'First create the roles (and their memberships) of the stored cluster globals that this server lacks; existing roles are never changed. Alone: only that.',
    }),
    'alter-roles': Flags.boolean({
      summary:
        'With --globals: also bring existing roles in line with the globals (attributes, password if stored, settings, comments, memberships). Never revokes or drops anything, never alters the role running the restore.',
      dependsOn: ['globals'],
    }),
    force: Flags.boolean({summary: 'Start without the 5-second countdown; required when stdin is not a terminal.'}),
    'keep-previous': Flags.boolean({
      summary: 'Keep the replaced database as <target>_dbb_previous_<hash> instead of dropping it (roll back by renaming it back).',
    }),
    owner: Flags.string({
      summary: 'Create the restored objects as this role (SET ROLE) and make it the database owner; for dumps taken with --no-owner.',
      helpValue: 'ROLE',
    }),
    list: Flags.boolean({
      summary: "Custom-format backups: print the archive's table of contents (pg_restore --list; with --json, parsed) and restore nothing.",
    }),
    jobs: Flags.integer({
      summary: 'Custom-format backups: pg_restore --jobs N (parallel); the archive is first written to a temporary file in TMPDIR, removed afterwards.',
      helpValue: 'N',
      min: 1,
      max: 64,
    }),
    table: Flags.string({
      summary: 'Custom-format backups: restore only this table (pg_restore --table; repeatable); only into a new database (--target-db).',
      helpValue: 'NAME',
      multiple: true,
    }),
    schema: Flags.string({
      summary: 'Custom-format backups: restore only this schema (pg_restore --schema; repeatable); only into a new database (--target-db).',
      helpValue: 'NAME',
      multiple: true,
    }),
    ...BASE_RESTORE_FLAGS,
  }

  // Database settings are validated only when restoring, so listing needs storage settings alone.
  static override configSections: readonly Section[] = ['namePrefix', 'storageBackend', 'decryption']
  static override usesStorage = true

  /** A restore (of a backup, of the globals) reports on its work; without either it lists the backups, and --list prints an archive's contents: those are what was asked for. */
  protected override stdoutIsReport(): boolean {
    return (this.args.backup !== undefined || this.flags.globals) && !this.flags.list
  }

  public async run(): Promise<(ArchiveListing & {id: string}) | BackupMetadata[] | RestoreOutcome | BaseRestoreOutcome | GlobalsRestoreResult | (RestoreOutcome & {globals: GlobalsRestoreResult})> {
    const reference = this.args.backup
    if (this.flags.globals && this.flags.type !== 'base') return this.restoreWithGlobals(reference)
    if (this.flags.type === 'base' && reference !== undefined) {
      const storage = await this.openStorage()
      try {
        const context = {config: this.config, storage, storageBackend: this.settings.storageBackend, prefix: this.settings.namePrefix, identityFile: this.settings.decryption.identityFile}
        return await runBaseRestore({...context, reference, flags: this.flags, logger: this.logger, signal: this.interruptSignal(), log: (line) => this.log(line)})
      } finally {
        await storage.close?.()
      }
    }

    if (this.flags.list) return this.listArchive(reference)
    const target = this.targetDatabase()
    const database = reference === undefined ? undefined : this.databaseConfig(target)
    const storage = await this.openStorage()
    try {
      if (reference === undefined || database === undefined) {
        // Damaged and unreadable backups are shown too (their status says so), never hidden.
        const {listing, drills} = await scanWithDrills(storage)
        this.log(backupTable(listing, new Date(), drills))
        if (listing.backups.length > 0) this.log(`\nRestore one with: ${this.config.bin} restore <id|latest>`)
        return listing.backups
      }

      return await this.restore(storage, reference, database)
    } finally {
      await storage.close?.()
    }
  }

  /** --list: the archive's TOC, read from storage in one verified stream; needs no database settings and touches no database. */
  private async listArchive(reference: string | undefined): Promise<ArchiveListing & {id: string}> {
    if (reference === undefined) throw new UsageError('--list needs a backup id or "latest" (a custom-format backup)')
    const storage = await this.openStorage()
    try {
      const backup = await resolveBackup(storage, reference, {prefix: this.backupPrefix(), type: 'logical'})
      if (backup.format !== 'custom') {
        throw new UsageError(`--list needs a custom-format backup (BACKUP_FORMAT=custom, ids ending in .dump.gz or .dump.zst); ${backup.id} is a ${backup.format} SQL dump (read it with: ${this.config.bin} backup download ${backup.id} -o - | gunzip | less)`)
      }

      await requirePgRestoreFor(backup)
      const signal = this.interruptSignal()
      const identityFile = await prepareDecryption(storage, backup.id, this.settings.decryption.identityFile, signal)
      const listing = await listArchive({storage, backup, signal, identityFile})
      if (!this.jsonEnabled()) for (const entry of listing.entries) this.log(entry.line)
      return {id: backup.id, header: listing.header, entries: listing.entries}
    } finally {
      await storage.close?.()
    }
  }

  /** --target-db, else --db (a DB_NAMES database restores into itself), else DB_NAME. */
  private targetDatabase(): string | undefined {
    const given = this.flags['target-db'] ?? this.flags.db
    return given === undefined ? undefined : checkDatabaseName(given)
  }

  /** Whose backups `latest` means: --db's, else BACKUP_NAME_PREFIX's. */
  private backupPrefix(): string {
    return this.flags.db === undefined ? this.settings.namePrefix : databasePrefix(this.settings.namePrefix, this.flags.db)
  }

  /**
   * --globals: the missing roles first (alone, when no database backup is named or the one named
   * is a globals backup), then the database restore as usual. Roles are created before the plan and
   * its countdown, because the plan's preflight refuses a dump whose roles are missing; they are only
   * ever added, never changed (unless --alter-roles).
   */
  private async restoreWithGlobals(reference: string | undefined): Promise<GlobalsRestoreResult | (RestoreOutcome & {globals: GlobalsRestoreResult})> {
    const database = this.databaseConfig(this.targetDatabase())
    const storage = await this.openStorage()
    try {
      const signal = this.interruptSignal()
      const named = reference === undefined || reference === 'latest' ? undefined : await resolveBackup(storage, reference)
      const globalsOnly = reference === undefined || named?.type === GLOBALS_TYPE
      const backup = globalsOnly ? undefined : (named ?? (await resolveBackup(storage, 'latest', {prefix: this.backupPrefix(), type: 'logical'})))
      if (backup) requireConfirmation({force: this.flags.force, interactive: Boolean(process.stdin.isTTY), target: database.database})
      const globalsBackup = await resolveGlobals(storage, this.settings.namePrefix, globalsOnly ? named?.id : undefined, backup)
      // Encrypted: the identity must open both before the first role is created.
      const identityFile = await prepareDecryption(storage, globalsBackup.id, this.settings.decryption.identityFile, signal)
      if (backup) await prepareDecryption(storage, backup.id, this.settings.decryption.identityFile, signal)
      const globals = await restoreGlobals({database, storage, logger: this.logger, identityFile}, globalsBackup, signal, {alterExisting: this.flags['alter-roles']})
      const unchanged = globals.existing.length - globals.altered.length
      this.logToStderr(
        `Globals ${globals.backupId}: created ${globals.created.length} role(s)${globals.created.length > 0 ? ` (${globals.created.join(', ')})` : ''}; ` +
          `${globals.altered.length > 0 ? `altered ${globals.altered.length} existing role(s) (${globals.altered.join(', ')}); ` : ''}` +
          `${unchanged} existing role(s) left unchanged${globals.granted.length > 0 ? `; granted ${globals.granted.join(', ')}` : ''}`,
      )
      for (const line of globals.skipped) this.logToStderr(`  skipped: ${line}`)
      if (!backup) return globals
      return {...(await this.restore(storage, backup.id, database)), globals}
    } finally {
      await storage.close?.()
    }
  }

  private async restore(storage: StorageBackend, reference: string, database: DatabaseConfig): Promise<RestoreOutcome> {
    const target = database.database
    requireConfirmation({force: this.flags.force, interactive: Boolean(process.stdin.isTTY), target})
    const signal = this.interruptSignal()
    const backup = await resolveBackup(storage, reference, {prefix: this.backupPrefix(), type: 'logical'})
    // Encrypted (an id ending in .age): AGE_IDENTITY_FILE must open it before preflight connects, let alone stages.
    const identityFile = await prepareDecryption(storage, backup.id, this.settings.decryption.identityFile, signal)
    const archive = {jobs: this.flags.jobs, tables: this.flags.table, schemas: this.flags.schema}
    const options = {backup, targetDatabase: target, keepPrevious: this.flags['keep-previous'], owner: this.flags.owner, archive, signal, identityFile}
    // Preflight before the plan: the plan says what will happen to what exists, and a refusal comes before the countdown.
    const plan = await planLogicalRestore(database, options)
    this.logToStderr(describePlan(plan, database, storage.location))
    this.logger.info(
      {event: 'restore.started', backupId: backup.id, database: target, host: database.host, port: database.port, force: this.flags.force, staging: plan.names.staging},
      `restoring ${backup.id} into ${target}`,
    )
    if (!this.flags.force) await countdown(process.stderr, signal)

    const progress = createProgress({label: `restoring into ${target}`, logger: this.logger, event: 'restore.progress', total: backup.sizeBytes})
    try {
      const outcome = await executeLogicalRestore({database, storage, logger: this.logger}, plan, {
        signal,
        onNotice: (message) => {
          this.logger.info({event: 'restore.temporary_file', backupId: backup.id}, message)
          this.logToStderr(message)
        },
        onProgress: ({readBytes, restoredBytes}) => progress.update(readBytes, {restoredBytes}),
      })
      progress.finish()
      const previous = outcome.previousDatabase === null ? '' : `; the replaced database is kept as "${outcome.previousDatabase}"`
      this.log(
        `Restored ${outcome.id} into database "${target}" on ${outcome.host}:${outcome.port}: ` +
          `${formatBytes(outcome.restoredBytes)} of ${backup.format === 'custom' ? 'archive' : 'SQL'} in ${(outcome.durationMs / 1000).toFixed(1)} s (sha256 verified)${previous}`,
      )
      return outcome
    } finally {
      progress.finish()
    }
  }

  /** DB_* settings, validated now; --target-db replaces DB_NAME (and stands in for it when DB_NAME is unset). */
  private databaseConfig(target: string | undefined): DatabaseConfig {
    const values = valuesByVariable(
      SECTION_SETTINGS.database.map((name) => setting(name)),
      this.flags,
    )
    return loadConfig(['database'], {...values, DB_NAME: target ?? values.DB_NAME}).database
  }
}
