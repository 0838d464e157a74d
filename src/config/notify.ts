import {NotifyConfig} from '../notify/notifier'
import {Target, slackAliasTarget} from '../notify/targets'
import {defineSection} from './fields'

/**
 * Notifications (src/notify): the targets in NOTIFY_URLS, plus the older SLACK_* variables as an
 * alias for one slack:// target. Each URL is parsed here, so a malformed one fails at start
 * (exit 2, naming NOTIFY_URLS and the accepted schemes), never when the alert is due. The
 * settings themselves (schemas, defaults) are declared in src/settings.ts.
 */
export const notify = defineSection(
  ['NOTIFY_URLS', 'NOTIFY_WEBHOOK_SECRET', 'NOTIFY_ON_SUCCESS', 'NOTIFY_TIMEOUT', 'NOTIFY_REMINDER_INTERVAL', 'SLACK_TOKEN', 'SLACK_WEBHOOK_URL', 'SLACK_CHANNEL', 'SLACK_MESSAGE_SUFFIX', 'SLACK_API_URL'],
  (object) =>
    object.transform((data): NotifyConfig => {
      const targets: Target[] = [...(data.NOTIFY_URLS ?? [])]
      const alias = slackAliasTarget({
        token: data.SLACK_TOKEN,
        webhookUrl: data.SLACK_WEBHOOK_URL,
        channel: data.SLACK_CHANNEL.replace(/^#/, ''),
        apiUrl: data.SLACK_API_URL,
        suffix: data.SLACK_MESSAGE_SUFFIX,
      })
      if (alias) targets.push(alias)
      return {
        targets,
        webhookSecret: data.NOTIFY_WEBHOOK_SECRET,
        onSuccess: data.NOTIFY_ON_SUCCESS,
        timeoutMs: data.NOTIFY_TIMEOUT,
        reminderMs: data.NOTIFY_REMINDER_INTERVAL,
      }
    }),
)
