import {DbbCommand} from '../base-command'
import {CheckReport, describeFailures, formatSeconds, logicalBackupIntervalMs, runChecks} from '../check/checks'
import {SlackOutcome, notifySlack, slackConfigured} from '../check/slack'
import {Section} from '../config'
import {EXIT_FAILURE} from '../errors'
import {renderTable} from '../format'
import {settingFlags} from '../settings'

export default class Check extends DbbCommand<typeof Check> {
  static override summary = 'Check that backups and archived WAL are fresh and complete; exit 1 (and alert Slack) when not.'
  static override description = `For monitoring and cron. Passes when the newest base backup finished within BASE_BACKUP_INTERVAL_MINUTES + 5 minutes, the newest archived WAL segment arrived within CHECKPOINT_TIMEOUT_SECONDS + 2 minutes, every WAL segment from the newest base backup's first one to the newest archived one is there (following its timeline and the timelines that branch from it; the first missing one is named), and the newest logical backup finished within the logical backup interval (BACKUP_INTERVAL or BACKUP_SCHEDULE) + 5 minutes, and the last passed restore drill is at most DRILL_MAX_AGE old with no failed drill after it ("not configured" until a drill was run).

Base backups and WAL are checked once either exists in storage; before that they are "not configured" and do not fail (a logical-only setup passes). CHECK_BASE_BACKUP=true / CHECK_WAL=true require them from the start; CHECK_BASE_BACKUP=false, CHECK_WAL=false, CHECK_LOGICAL_BACKUP=false turn single checks off. Reads storage only.

When a check fails and SLACK_TOKEN or SLACK_WEBHOOK_URL is set, a message naming the failing checks goes to SLACK_CHANNEL. A Slack failure is logged; the exit code still reports the checks.`

  static override examples = [
    {description: 'A table of checks; exit code 1 when one fails', command: 'BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>'},
    {description: 'Only WAL and base backups, alerting Slack', command: 'CHECK_LOGICAL_BACKUP=false SLACK_TOKEN=xoxb-… SLACK_MESSAGE_SUFFIX="(production)" <%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    ...settingFlags('STORAGE_BACKEND', 'BACKUP_NAME_PREFIX', 'BACKUP_INTERVAL', 'BACKUP_SCHEDULE', 'TZ'),
    ...settingFlags('BASE_BACKUP_INTERVAL_MINUTES', 'CHECKPOINT_TIMEOUT_SECONDS', 'CHECK_BASE_BACKUP', 'CHECK_WAL', 'CHECK_LOGICAL_BACKUP'),
    ...settingFlags('DRILL_MAX_AGE'),
    ...settingFlags('SLACK_TOKEN', 'SLACK_WEBHOOK_URL', 'SLACK_CHANNEL', 'SLACK_MESSAGE_SUFFIX', 'SLACK_API_URL'),
  }

  static override configSections: readonly Section[] = ['storageBackend', 'namePrefix', 'schedule', 'check', 'slack', 'drill']
  static override usesStorage = true

  public async run(): Promise<CheckReport & {slack: SlackOutcome | null}> {
    const storage = await this.openStorage()
    let report: CheckReport
    try {
      report = await runChecks(storage, {
        prefix: this.settings.namePrefix,
        config: this.settings.check,
        logicalIntervalMs: logicalBackupIntervalMs(this.settings.schedule),
        drillMaxAgeMs: this.settings.drill.maxAgeMs,
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
    let slack: SlackOutcome | null = null
    if (!report.ok) {
      const failures = describeFailures(report)
      this.logger.warn({event: 'check.failed', failures}, `backup check failed: ${failures.join('; ')}`)
      if (slackConfigured(this.settings.slack)) {
        slack = await notifySlack(this.settings.slack, `:rotating_light: dbb check failed for ${report.location}: ${failures.join('; ')}`, this.logger)
        this.log(slack.sent ? `Alert sent to Slack #${slack.channel}.` : `Slack alert not sent: ${slack.error}`)
      }

      process.exitCode = EXIT_FAILURE
    }

    return {...report, slack}
  }
}
