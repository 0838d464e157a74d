import {Args, Flags} from '@oclif/core'

import {DbbCommand} from '../base-command'
import {Section, drillServer} from '../config'
import {runPhysicalDrill} from '../drill/physical'
import {describeFailure, runDrill} from '../drill/run-drill'
import {parseRecoveryTarget} from '../restore/base'
import {defaultRestoreCommand} from '../restore/base-cli'
import type {DrillResult} from '../drill/result'
import {EXIT_DRILL_FAILED, UsageError} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {formatBytes} from '../format'
import {createProgress} from '../progress'
import {drillFinished} from '../notify/backup-events'
import {settingFlagsFor} from '../settings'

export default class Drill extends DbbCommand<typeof Drill> {
  static override summary = 'Restore a backup into a scratch database, check it against what the backup recorded, and drop it.'
  static override description = `A restore drill proves a backup restores. It creates the scratch database dbb_drill_<hash> (reserved, marked as dbb's) on DB_HOST or DRILL_DB_HOST, imports the dump into it in one pass (sha256 checked, as a restore does), and compares it with the contents the backup recorded in pg_dump's own snapshot: every table's exact row count (and checksum, with BACKUP_RECORD_CHECKSUMS), sequences, large objects. Each table or sequence that differs is named. Backups taken before dbb recorded contents are checked for a successful restore only (the result says "checked": "restore").

The scratch database is always dropped, also on Ctrl-C or SIGTERM; one left by a SIGKILLed drill is dropped by the next drill (under an advisory lock, so a running drill's is never touched). A database named like the scratch database that dbb did not create is refused, never touched. The result (passed/failed, differences, restore duration = the measured RTO, size) is stored next to the backup as <id>.drill.json.

A failed drill is sent to NOTIFY_URLS (drill.failed; drill.passed with NOTIFY_ON_SUCCESS=true).

A physical drill (--type base) proves a base backup and its WAL: it restores the base backup with the code of dbb restore --type base (sha256 checked; archive_mode off, so it never archives into production) into a private temporary data directory, starts PostgreSQL of the backup's major version on a unix socket in that directory (no TCP), replays every archived WAL segment (or up to --target-time), waits for promotion, checks that replay reached the newest segment archived when the drill began (a missing or damaged segment is named), and connects to every database and counts every table's rows (which reads every table). The server is stopped and the directory removed, also on Ctrl-C or SIGTERM; a SIGKILLed drill's directory (marked dbb-drill.json) and server are removed by the next physical drill. It needs the server binaries (PATH, pg_config --bindir, /usr/lib/postgresql/<major>/bin); without them it checks the backup's sha256 and tar, records nothing and exits 1. As root, the server runs as DRILL_OS_USER (default postgres). RTO = restore + replay.

Exit codes: 0 passed; ${EXIT_DRILL_FAILED} failed (the backup did not restore, or differs from its record); 1 the drill could not run (drill server or storage unreachable, interrupted); 2 bad input.`

  static override examples = [
    {description: 'Drill the newest logical backup', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Drill the newest base backup: restore it, replay the WAL archive on a private server, read every database', command: '<%= config.bin %> <%= command.id %> latest --type base'},
    {description: 'Drill one backup on a separate server, result as JSON', command: 'DRILL_DB_HOST=drills.internal <%= config.bin %> <%= command.id %> backup_20261121T030000Z.sql.gz --json'},
  ]

  static override args = {
    backup: Args.string({required: false, default: 'latest', description: 'A backup id, or "latest" (default).'}),
  }

  static override flags = {
    ...settingFlagsFor('drill'),
    type: Flags.string({options: ['logical', 'base'], default: 'logical', summary: 'logical: a pg_dump into a scratch database; base: a base backup + archived WAL on a private PostgreSQL server (physical drill).'}),
    'target-time': Flags.string({summary: '--type base: replay WAL up to this time (with a zone) instead of the end of the archive.', helpValue: '"2026-11-21 14:30:00+00"'}),
  }

  static override configSections: readonly Section[] = ['database', 'namePrefix', 'storageBackend', 'drill', 'notify', 'decryption']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<DrillResult> {
    const storage = await this.openStorage()
    if (this.flags.type === 'base') {
      try {
        return this.report(await this.physicalDrill(storage), storage.location)
      } finally {
        await storage.close?.()
      }
    }

    if (this.flags['target-time'] !== undefined) throw new UsageError('--target-time applies to physical drills only (--type base)')
    const progress = createProgress({label: 'drill: restoring', logger: this.logger, event: 'drill.progress'})
    try {
      const result = await runDrill(
        {server: drillServer(this.settings.database, this.settings.drill), storage, namePrefix: this.settings.namePrefix, logger: this.logger, identityFile: this.settings.decryption.identityFile},
        {
          reference: this.args.backup ?? 'latest',
          signal: this.interruptSignal(),
          onProgress: ({readBytes, restoredBytes}) => progress.update(readBytes, {restoredBytes}),
        },
      )
      progress.finish()
      return this.report(result, storage.location)
    } finally {
      progress.finish()
      await storage.close?.()
    }
  }

  private async physicalDrill(storage: StorageBackend): Promise<DrillResult> {
    const progress = createProgress({label: 'drill: restoring base backup', logger: this.logger, event: 'drill.progress'})
    try {
      return await runPhysicalDrill(
        {
          storage,
          namePrefix: this.settings.namePrefix,
          logger: this.logger,
          restoreCommand: await defaultRestoreCommand(this.config, this.settings.storageBackend, this.flags as Record<string, unknown>),
          storageEnvironment: this.storageEnvironment(),
          osUser: this.settings.drill?.osUser ?? 'postgres',
          knownRole: this.settings.database.user,
        },
        {
          reference: this.args.backup ?? 'latest',
          target: parseRecoveryTarget({time: this.flags['target-time']}),
          signal: this.interruptSignal(),
          onProgress: (bytes) => progress.update(bytes),
        },
      )
    } finally {
      progress.finish()
    }
  }

  private report(result: DrillResult, location: string): DrillResult {
    // drill.failed reaches NOTIFY_URLS (drill.passed with NOTIFY_ON_SUCCESS); never changes the exit code.
    this.notify(drillFinished({backupId: result.backupId, location, passed: result.status === 'passed', reason: result.status === 'passed' ? undefined : describeFailure(result), durationMs: result.restoreMs}))
    const what =
      result.checked === 'replay'
        ? `restored, WAL replayed to ${result.physical?.walEnd ?? 'the target'}, every database read`
        : result.checked === 'contents'
          ? 'restored and matches what the backup recorded'
          : 'restored (taken before dbb recorded contents: restore success only)'
    if (result.status === 'passed') {
      this.log(`Drill passed: ${result.backupId} ${what}`)
    } else {
      this.log(`Drill FAILED: ${result.backupId}: ${describeFailure(result)}`)
      for (const difference of result.differences) this.log(`  ${difference.kind} ${difference.object}: expected ${difference.expected}, restored ${difference.actual}`)
      process.exitCode = EXIT_DRILL_FAILED
    }

    const cleanup = result.checked === 'replay' ? `private server stopped, ${result.scratchDatabase} removed` : `scratch database ${result.scratchDatabase} dropped`
    this.log(`  restore ${(result.restoreMs / 1000).toFixed(1)} s (RTO), ${formatBytes(result.sizeBytes)} compressed, on ${result.server}; ${cleanup}`)
    if (result.physical) for (const db of result.physical.databases) this.log(`  database ${db.name}: ${db.tables} tables, ${db.rows} rows`)
    return result
  }
}
