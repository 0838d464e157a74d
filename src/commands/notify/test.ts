import {DbbCommand} from '../../base-command'
import {Section} from '../../config'
import {ConfigError, EXIT_FAILURE} from '../../errors'
import {renderTable} from '../../format'
import type {DeliveryResult} from '../../notify/notifier'
import {settingFlagsFor} from '../../settings'

export default class NotifyTest extends DbbCommand<typeof NotifyTest> {
  static override summary = 'Send a test notification to every target (NOTIFY_URLS and the SLACK_* aliases); exit 1 if any target failed.'
  static override description = `Sends one notify.test event to each configured target, with the same timeout and retries as real notifications, and prints each target's result (the URL with its credentials left out, attempts, error). A healthchecks target gets a /log ping, which is recorded without changing the check's state.

Exit codes: 0 every target accepted the message; 1 at least one target failed; 2 no target is configured or a URL is malformed.`

  static override examples = [
    {description: 'Test a Slack channel and a webhook', command: 'NOTIFY_URLS=slack://xoxb-…@ops,webhook+https://hooks.example.com/dbb <%= config.bin %> <%= command.id %>'},
    {description: 'Per-target results as JSON', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = settingFlagsFor('notify test')
  static override configSections: readonly Section[] = ['notify']

  public async run(): Promise<{ok: boolean; results: DeliveryResult[]}> {
    if (!this.notifier?.configured) {
      throw new ConfigError([{variable: 'NOTIFY_URLS', message: 'no notification target is configured (nor SLACK_TOKEN / SLACK_WEBHOOK_URL)', example: 'webhook+https://hooks.example.com/dbb'}])
    }

    const results = await this.notifier.deliver(
      {kind: 'notify.test', summary: 'dbb notify test: this target receives dbb notifications', details: {}},
      {allTargets: true},
    )
    this.log(
      renderTable(
        ['TARGET', 'URL', 'RESULT', 'ATTEMPTS', 'DETAIL'],
        results.map((result) => [result.target, result.url, result.ok ? 'OK' : 'FAILED', String(result.attempts), result.error ?? `${result.durationMs} ms`]),
      ),
    )
    const ok = results.every((result) => result.ok)
    if (!ok) process.exitCode = EXIT_FAILURE
    return {ok, results}
  }
}
