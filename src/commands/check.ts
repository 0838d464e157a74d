import {DbbCommand} from '../base-command'
import {CheckReport, describeFailures, formatSeconds, logicalBackupIntervalMs, runChecks} from '../check/checks'
import {Section} from '../config'
import {EXIT_FAILURE} from '../errors'
import {renderTable} from '../format'
import {settingFlagsFor} from '../settings'
import type {DeliveryResult} from '../notify/notifier'

export default class Check extends DbbCommand<typeof Check> {
  static override summary = 'Check that backups and archived WAL are fresh and complete; exit 1 (and notify) when not.'
  static override description = `For monitoring and cron. Passes when the newest base backup finished within BASE_BACKUP_INTERVAL_MINUTES + 5 minutes, the newest archived WAL segment arrived within CHECKPOINT_TIMEOUT_SECONDS + 2 minutes, every WAL segment from the newest base backup's first one to the newest archived one is there (following its timeline and the timelines that branch from it; the first missing one is named), and the newest logical backup finished within the logical backup interval (BACKUP_INTERVAL or BACKUP_SCHEDULE) + 5 minutes, and the last passed restore drill is at most DRILL_MAX_AGE old with no failed drill after it ("not configured" until a drill was run).

Base backups and WAL are checked once either exists in storage; before that they are "not configured" and do not fail (a logical-only setup passes). CHECK_BASE_BACKUP=true / CHECK_WAL=true require them from the start; CHECK_BASE_BACKUP=false, CHECK_WAL=false, CHECK_LOGICAL_BACKUP=false turn single checks off. Reads storage only.

When a check fails, a check.failed notification naming the failing checks goes to every target in NOTIFY_URLS (and SLACK_TOKEN / SLACK_WEBHOOK_URL); each delivery's result is printed (--json: "notifications"). A failed delivery is logged; the exit code still reports the checks.`

  static override examples = [
    {description: 'A table of checks; exit code 1 when one fails', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>'},
    {description: 'Only WAL and base backups, alerting Slack and a webhook', command: 'CHECK_LOGICAL_BACKUP=false NOTIFY_URLS=slack://xoxb-…@ops,webhook+https://hooks.example.com/dbb <%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = settingFlagsFor('check')

  static override configSections: readonly Section[] = ['storageBackend', 'namePrefix', 'schedule', 'check', 'notify', 'drillAge']
  static override usesStorage = true

  public async run(): Promise<CheckReport & {notifications: DeliveryResult[]}> {
    const storage = await this.openStorage()
    let report: CheckReport
    try {
      report = await runChecks(storage, {
        prefix: this.settings.namePrefix,
        config: this.settings.check,
        logicalIntervalMs: logicalBackupIntervalMs(this.settings.schedule),
        drillMaxAgeMs: this.settings.drillAge.maxAgeMs,
      })
    } finally {
      await storage.close?.()
    }

    this.log(
      renderTable(
        ['CHECK', 'STATUS', 'NEWEST', 'AGE', 'LIMIT', 'DETAIL'],
        report.checks.map((check) => [
          check.name,
          check.status.toUpperCase(),
          check.newest ?? '-',
          check.ageSeconds === null ? '-' : formatSeconds(check.ageSeconds),
          check.maxAgeSeconds === null ? '-' : formatSeconds(check.maxAgeSeconds),
          check.message,
        ]),
      ),
    )
    let notifications: DeliveryResult[] = []
    if (!report.ok) {
      const failures = describeFailures(report)
      this.logger.warn({event: 'check.failed', failures}, `backup check failed: ${failures.join('; ')}`)
      // Waited for, as at any command's exit at most NOTIFY_TIMEOUT (settle abandons the rest): the results are part of the report.
      const delivery = this.notifier?.deliver({
        kind: 'check.failed',
        summary: `dbb check failed for ${report.location}: ${failures.join('; ')}`,
        details: {location: report.location, failures: failures.join('; ')},
      })
      await this.notifier?.settle()
      notifications = (await delivery) ?? []
      for (const result of notifications) this.log(result.ok ? `Notified ${result.url}.` : `Notification to ${result.url} failed: ${result.error}`)
      process.exitCode = EXIT_FAILURE
    }

    return {...report, notifications}
  }
}
