import {Args} from '@oclif/core'

import {DbbCommand} from '../base-command'
import {Section, drillServer} from '../config'
import {describeFailure, runDrill} from '../drill/run-drill'
import type {DrillResult} from '../drill/result'
import {EXIT_DRILL_FAILED} from '../errors'
import {formatBytes} from '../format'
import {createProgress} from '../progress'
import {drillFinished} from '../notify/backup-events'
import {settingFlagsFor} from '../settings'

export default class Drill extends DbbCommand<typeof Drill> {
  static override summary = 'Restore a backup into a scratch database, check it against what the backup recorded, and drop it.'
  static override description = `A restore drill proves a backup restores. It creates the scratch database dbb_drill_<hash> (reserved, marked as dbb's) on DB_HOST or DRILL_DB_HOST, imports the dump into it in one pass (sha256 checked, as a restore does), and compares it with the contents the backup recorded in pg_dump's own snapshot: every table's exact row count (and checksum, with BACKUP_RECORD_CHECKSUMS), sequences, large objects. Each table or sequence that differs is named. Backups taken before dbb recorded contents are checked for a successful restore only (the result says "checked": "restore").

The scratch database is always dropped, also on Ctrl-C or SIGTERM; one left by a SIGKILLed drill is dropped by the next drill (under an advisory lock, so a running drill's is never touched). A database named like the scratch database that dbb did not create is refused, never touched. The result (passed/failed, differences, restore duration = the measured RTO, size) is stored next to the backup as <id>.drill.json.

A failed drill is sent to NOTIFY_URLS (drill.failed; drill.passed with NOTIFY_ON_SUCCESS=true).

Exit codes: 0 passed; ${EXIT_DRILL_FAILED} failed (the backup did not restore, or differs from its record); 1 the drill could not run (drill server or storage unreachable, interrupted); 2 bad input.`

  static override examples = [
    {description: 'Drill the newest logical backup', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Drill one backup on a separate server, result as JSON', command: 'DRILL_DB_HOST=drills.internal <%= config.bin %> <%= command.id %> backup_20261121T030000Z.sql.gz --json'},
  ]

  static override args = {
    backup: Args.string({required: false, default: 'latest', description: 'A backup id, or "latest" (default).'}),
  }

  static override flags = settingFlagsFor('drill')

  static override configSections: readonly Section[] = ['database', 'namePrefix', 'storageBackend', 'drill', 'notify', 'decryption']
  static override usesStorage = true

  public async run(): Promise<DrillResult> {
    const storage = await this.openStorage()
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
      // drill.failed reaches NOTIFY_URLS (drill.passed with NOTIFY_ON_SUCCESS); never changes the exit code.
      this.notify(drillFinished({backupId: result.backupId, location: storage.location, passed: result.status === 'passed', reason: result.status === 'passed' ? undefined : describeFailure(result), durationMs: result.restoreMs}))
      const what = result.checked === 'contents' ? 'restored and matches what the backup recorded' : 'restored (taken before dbb recorded contents: restore success only)'
      if (result.status === 'passed') {
        this.log(`Drill passed: ${result.backupId} ${what}`)
      } else {
        this.log(`Drill FAILED: ${result.backupId}: ${describeFailure(result)}`)
        for (const difference of result.differences) this.log(`  ${difference.kind} ${difference.object}: expected ${difference.expected}, restored ${difference.actual}`)
        process.exitCode = EXIT_DRILL_FAILED
      }

      this.log(`  restore ${(result.restoreMs / 1000).toFixed(1)} s (RTO), ${formatBytes(result.sizeBytes)} compressed, on ${result.server}; scratch database ${result.scratchDatabase} dropped`)
      return result
    } finally {
      progress.finish()
      await storage.close?.()
    }
  }
}
