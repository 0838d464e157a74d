import type {SlackConfig} from '../config'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'

export interface SlackOutcome {
  sent: boolean
  via?: 'token' | 'webhook'
  channel?: string
  error?: string
}

const TIMEOUT_MS = 10_000

export function slackConfigured(config: SlackConfig): boolean {
  return config.token !== undefined || config.webhookUrl !== undefined
}

/**
 * Posts `text` (plus SLACK_MESSAGE_SUFFIX) to Slack: chat.postMessage with the bot token as a
 * bearer header, else the incoming webhook. Never throws: an alert that cannot be delivered is
 * logged and reported, and must not hide or change the result it was about. The token and the
 * webhook URL (which embeds a secret) never appear in logs or errors.
 */
export async function notifySlack(config: SlackConfig, text: string, logger?: Logger): Promise<SlackOutcome> {
  if (!slackConfigured(config)) return {sent: false, error: 'Slack is not configured (SLACK_TOKEN or SLACK_WEBHOOK_URL)'}
  const fullText = config.messageSuffix ? `${text} ${config.messageSuffix}` : text
  const via = config.token === undefined ? 'webhook' : 'token'
  const url = via === 'token' ? `${config.apiUrl}/chat.postMessage` : config.webhookUrl!
  const headers: Record<string, string> = {'content-type': 'application/json; charset=utf-8'}
  if (via === 'token') headers.authorization = `Bearer ${config.token}`
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers,
      body: JSON.stringify({channel: config.channel, text: fullText}),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    })
    const body = await response.text()
    // chat.postMessage answers 200 with {"ok": false, "error": "..."} on failure; a webhook answers "ok".
    let problem: string | undefined
    if (!response.ok) problem = `HTTP ${response.status}${body ? `: ${body.slice(0, 200)}` : ''}`
    else if (via === 'token') {
      const parsed = safeJson(body) as {ok?: boolean; error?: string} | undefined
      if (!parsed?.ok) problem = `Slack answered ${parsed?.error ?? 'an unexpected response'}`
    }

    if (problem) throw new Error(problem)
    logger?.info({event: 'slack.sent', via, channel: config.channel}, `alert sent to Slack #${config.channel}`)
    return {sent: true, via, channel: config.channel}
  } catch (error) {
    const message = redact(errorMessage(error), config)
    logger?.error({event: 'slack.failed', via, channel: config.channel, error: message}, 'could not send the Slack alert')
    return {sent: false, via, channel: config.channel, error: message}
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** fetch errors can quote the URL; the webhook URL is a credential. */
function redact(message: string, config: SlackConfig): string {
  let result = message
  for (const secret of [config.webhookUrl, config.token]) if (secret) result = result.split(secret).join('[redacted]')
  return result
}
