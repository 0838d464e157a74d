import {Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {runBaseBackup} from '../../backup/base-backup'
import {BackupOutcome, runLogicalBackup} from '../../backup/run-backup'
import {MultiBackupOutcome, describeRun, runDatabaseBackups} from '../../backup/run-databases'
import {explainGlobalsFailure, runGlobalsBackup} from '../../backup/globals'
import {EXIT_PARTIAL_FAILURE, errorMessage} from '../../errors'
import {formatBytes} from '../../format'
import {createBackupProgress} from '../../progress'
import {Section} from '../../config'
import {settingFlagsFor} from '../../settings'
import {backupFinishedEvents, backupStarted} from '../../notify/backup-events'

export default class BackupRun extends DbbCommand<typeof BackupRun> {
  static override summary = 'Take a backup now — logical (pg_dump of DB_NAME, the default) or --type base (pg_basebackup of the cluster) — verified, then apply retention.'
  static override description = `Streams pg_dump (owners and privileges included unless BACKUP_NO_OWNER=true; the database's own properties and the roles the dump names are recorded in the sidecar) through gzip (or zstd with COMPRESSION=zstd) into the storage backend without a temporary file, checks the compressed stream by decompressing it as it is sent, reads the stored dump back to verify its size and sha256, and only then writes the <id>.meta.json sidecar that makes the backup exist. A failure or Ctrl-C removes what was written. Restore with stock tools: gunzip -c <id>.sql.gz | psql, or zstd -dc <id>.sql.zst | psql. With BACKUP_FORMAT=custom, pg_dump's custom archive (checked by pg_restore as it streams) is stored as <id>.dump.gz or .dump.zst: gunzip -c <id>.dump.gz | pg_restore -d DB.

With DB_NAMES (app,billing or all), each database is backed up in turn under its own ids (<prefix>_<encoded name>_<timestamp>), retention and latest, after the cluster globals (pg_dumpall --globals-only; BACKUP_GLOBALS); a database that fails does not stop the others, and the run exits 3 (1 when nothing was stored).

With --type base, pg_basebackup of the whole cluster is streamed the same way, for point-in-time recovery with archived WAL (dbb wal push).

Notifications (NOTIFY_URLS): backup.failed, backup.succeeded with NOTIFY_ON_SUCCESS=true, healthchecks start/success/fail pings, retention.refused when retention keeps a damaged backup. They never change the exit code; the command waits for them at most NOTIFY_TIMEOUT before it exits.`

  static override examples = [
    {
      description: 'Back up the database "app" into /var/backups/postgres',
      command: 'DB_HOST=localhost DB_NAME=app DB_USER=postgres DB_PASSWORD=… BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>',
    },
    {description: 'Machine-readable result, no retention', command: '<%= config.bin %> <%= command.id %> --json --no-prune'},
    {description: 'Two databases and the roles, one run', command: 'DB_NAME=postgres DB_NAMES=app,billing <%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    ...settingFlagsFor('backup run'),
    type: Flags.string({
      options: ['logical', 'base'],
      default: 'logical',
      summary: 'logical: pg_dump of DB_NAME; base: pg_basebackup of the whole cluster, for point-in-time recovery with archived WAL.',
    }),
    prune: Flags.boolean({
      allowNo: true,
      default: true,
      summary: 'Apply retention after a successful backup (--no-prune to skip).',
    }),
  }

  static override configSections: readonly Section[] = ['database', 'namePrefix', 'retention', 'storageBackend', 'baseBackup', 'compression', 'logicalDump', 'databases', 'notify', 'encryption']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<(BackupOutcome & {globalsError?: string}) | MultiBackupOutcome> {
    const storage = await this.openStorage()
    const facts = {type: this.flags.type === 'base' ? ('base' as const) : ('logical' as const), location: storage.location, triggeredBy: 'cli'}
    this.notify(backupStarted(facts))
    try {
      const outcome = await this.backup()
      if ('databases' in outcome) {
        // Several databases: one event for the run, failed when any part failed (its exit code says which way).
        const failed = [...(outcome.globals ? [outcome.globals] : []), ...outcome.databases].filter((part) => part.status !== 'succeeded')
        // A run that stored every part succeeds (healthchecks' success ping answers its start ping).
        if (failed.length > 0) this.notify(backupFinishedEvents(facts, {error: describeRun(outcome)})[0])
        else this.notify({kind: 'backup.succeeded', summary: `${describeRun(outcome)} on ${storage.location}`, details: {...facts, backupId: null}})
        return outcome
      }

      const events = outcome.globalsError === undefined ? backupFinishedEvents(facts, {outcome}) : backupFinishedEvents(facts, {error: `the globals could not be stored: ${outcome.globalsError}`})
      for (const event of events) this.notify(event)
      return outcome
    } catch (error) {
      // The exit code stays the backup's: the notification is sent (bounded) on the way out.
      for (const event of backupFinishedEvents(facts, {error: errorMessage(error)})) this.notify(event)
      throw error
    }
  }

  private async backup(): Promise<(BackupOutcome & {globalsError?: string}) | MultiBackupOutcome> {
    const storage = await this.openStorage()
    const progress = createBackupProgress(this.logger)
    try {
      const deps = {
        database: this.settings.database,
        storage,
        namePrefix: this.settings.namePrefix,
        retention: this.settings.retention,
        logger: this.logger,
        compression: this.settings.compression,
        logicalDump: this.settings.logicalDump,
        encryption: this.settings.encryption,
      }
      const options = {
        triggeredBy: 'cli' as const,
        prune: this.flags.prune,
        signal: this.interruptSignal(),
        onProgress: progress.onProgress,
      }
      const {databases} = this.settings
      if (this.flags.type !== 'base' && databases.names !== undefined) {
        const multi = await runDatabaseBackups(deps, databases, options)
        progress.finish()
        this.reportRun(multi, storage.location)
        return multi
      }

      // DB_NAME alone, as before; with BACKUP_GLOBALS=true the globals are stored first (its failure fails the run, exit 3).
      const globalsError =
        this.flags.type !== 'base' && databases.globals
          ? await runGlobalsBackup(deps, options, databases).then(
              ({metadata}) => (this.log(`Globals ${metadata.id} stored in ${storage.location}`), undefined),
              (error: unknown) => explainGlobalsFailure(errorMessage(error)),
            )
          : undefined
      const outcome =
        this.flags.type === 'base'
          ? await runBaseBackup({...deps, baseBackup: this.settings.baseBackup}, options)
          : await runLogicalBackup(deps, options)
      progress.finish()
      if (globalsError !== undefined) {
        process.exitCode = EXIT_PARTIAL_FAILURE
        process.stderr.write(`Error: the globals (pg_dumpall --globals-only) could not be stored: ${globalsError}\n`)
      }

      const {metadata, pruned, pruneError} = outcome
      this.log(`Backup ${metadata.id} stored in ${storage.location}`)
      this.log(`  size ${formatBytes(metadata.sizeBytes)} (${formatBytes(metadata.uncompressedBytes ?? 0)} of ${metadata.type === 'base' ? 'tar' : 'SQL'}), sha256 ${metadata.sha256}`)
      if (metadata.type === 'base') {
        this.log(`  took ${(metadata.durationMs / 1000).toFixed(1)} s, PostgreSQL ${metadata.pgVersion}, timeline ${metadata.timeline}`)
        this.log(`  WAL ${metadata.startLsn} → ${metadata.stopLsn}; point-in-time restores need archived WAL from ${metadata.firstWalSegment} on`)
      } else {
        this.log(`  took ${(metadata.durationMs / 1000).toFixed(1)} s, PostgreSQL ${metadata.pgVersion}, pg_dump ${metadata.pgDumpVersion}`)
      }
      if (pruned && pruned.deleted.length > 0) this.log(`  retention removed ${pruned.deleted.map((entry) => entry.id).join(', ')}`)
      if (pruneError) this.warn(`retention could not finish (the backup itself succeeded): ${pruneError}`)
      return globalsError === undefined ? outcome : {...outcome, globalsError}
    } finally {
      progress.finish()
      await storage.close?.()
    }
  }

  /** One line per part; a failure also on stderr and as the exit code (3 partial, 1 nothing stored), the results stay on stdout / in --json. */
  private reportRun(outcome: MultiBackupOutcome, location: string): void {
    for (const result of [...(outcome.globals ? [outcome.globals] : []), ...outcome.databases]) {
      const what = result.database === null ? 'globals' : `database "${result.database}"`
      this.log(result.status === 'succeeded' ? `${what}: ${result.backupId} stored in ${location} (${formatBytes(result.sizeBytes ?? 0)})` : `${what}: FAILED — ${result.error}`)
      if (result.pruneError) this.warn(`retention for ${what} could not finish (the backup itself succeeded): ${result.pruneError}`)
    }

    if (outcome.exitCode !== 0) {
      process.exitCode = outcome.exitCode
      process.stderr.write(`Error: ${describeRun(outcome)}\n`)
    }
  }
}
