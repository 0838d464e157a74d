import {z} from 'zod'

import {NotifyConfig} from '../notify/notifier'
import {DEFAULT_SLACK_API, Target, TargetUrlError, parseTargetUrl, slackAliasTarget, splitUrls} from '../notify/targets'
import {defineSection, duration, flag, httpUrl} from './fields'

/** NOTIFY_URLS: comma-separated target URLs, each parsed (and its credentials registered as secrets). */
const notifyUrls = z.string().transform((value, ctx) => {
  const targets: Target[] = []
  splitUrls(value).forEach((entry, index) => {
    try {
      targets.push(parseTargetUrl(entry, index + 1))
    } catch (error) {
      if (!(error instanceof TargetUrlError)) throw error
      ctx.addIssue({code: 'custom', message: error.message})
    }
  })
  return targets
})

/**
 * Notifications (src/notify): the targets in NOTIFY_URLS, plus the older SLACK_* variables as an
 * alias for one slack:// target. Each URL is parsed here, so a malformed one fails at start
 * (exit 2, naming NOTIFY_URLS and the accepted schemes), never when the alert is due.
 */
export const notify = defineSection(
  {
    // Parsed as a field, so a bad URL is reported together with the section's other problems.
    NOTIFY_URLS: notifyUrls.optional(),
    NOTIFY_WEBHOOK_SECRET: z.string().min(16, {message: 'must be at least 16 characters (openssl rand -hex 32)'}).optional(),
    NOTIFY_ON_SUCCESS: flag(false),
    // A command waits this long at exit for deliveries: minutes would hold up a cron job.
    NOTIFY_TIMEOUT: duration.refine((ms) => ms <= 5 * 60_000, {message: 'must be at most 5m (one delivery attempt; a command waits this long at exit)'}).default(10_000),
    NOTIFY_REMINDER_INTERVAL: duration.refine((ms) => ms >= 60_000, {message: 'must be at least 1m (a reminder more often than that is noise)'}).default(24 * 3600 * 1000),
    // The older Slack-only variables: an alias for one slack:// target.
    SLACK_TOKEN: z.string().optional(),
    SLACK_WEBHOOK_URL: httpUrl.optional(),
    SLACK_CHANNEL: z.string().default('sysadmin'),
    SLACK_MESSAGE_SUFFIX: z.string().optional(),
    SLACK_API_URL: httpUrl.default(DEFAULT_SLACK_API),
  },
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
