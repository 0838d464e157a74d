import {registerSecret} from '../secrets'

/**
 * Notification targets, each configured by one URL (the Shoutrrr/Apprise convention): the kind
 * of target is the URL's scheme. Parsing registers every credential a URL carries (a token, a
 * password, a webhook's path) as a secret, so none of them reaches a log line or an error.
 */
export type TargetKind = 'slack' | 'webhook' | 'healthchecks' | 'email'
export const TARGET_KINDS: readonly TargetKind[] = ['slack', 'webhook', 'healthchecks', 'email']

export const DEFAULT_SLACK_API = 'https://slack.com/api'

export type Target =
  | {kind: 'slack'; display: string; via: 'token'; token: string; channel: string; apiUrl: string; suffix?: string}
  | {kind: 'slack'; display: string; via: 'webhook'; webhookUrl: string; channel?: string; suffix?: string}
  | {kind: 'webhook'; display: string; url: string}
  | {kind: 'healthchecks'; display: string; url: string}
  | {kind: 'email'; display: string; host: string; port: number; secure: boolean; starttls: 'auto' | 'required' | 'never'; user?: string; password?: string; from: string; to: string[]}

/** What NOTIFY_URLS accepts, for error messages and the README. */
export const ACCEPTED_SCHEMES = [
  'slack://<bot token>@<channel>',
  'slack+https://<incoming webhook URL without https://>',
  'webhook+https://… (or webhook+http://, generic+https://)',
  'healthchecks+https://<ping URL> (or healthchecks+http://)',
  'smtp://[user:password@]host[:port]/?from=…&to=…',
  'smtps://…',
]

export class TargetUrlError extends Error {}

/** Splits NOTIFY_URLS on commas (a comma inside one URL's query, e.g. several `to=` addresses, is written %2C). */
export function splitUrls(value: string): string[] {
  return value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
}

/**
 * One URL → a target. Throws TargetUrlError with a message that names the entry's position and
 * scheme only: the URL itself is a credential and is never quoted.
 */
export function parseTargetUrl(entry: string, position: number): Target {
  registerSecret(entry)
  let url: URL
  try {
    url = new URL(entry)
  } catch {
    throw new TargetUrlError(`entry ${position} is not a URL; accepted: ${ACCEPTED_SCHEMES.join(', ')}`)
  }

  const username = safeDecode(url.username)
  const password = safeDecode(url.password)
  for (const secret of [username, password, url.username, url.password]) registerSecret(secret)
  const scheme = url.protocol.replace(/:$/, '').toLowerCase()
  const problem = (message: string) => new TargetUrlError(`entry ${position} (${scheme}://): ${message}`)
  switch (scheme) {
    case 'slack': {
      const channel = (url.searchParams.get('channel') ?? safeDecode(url.hostname)).replace(/^#/, '')
      if (!username) throw problem('needs the bot token before @, e.g. slack://xoxb-…@alerts')
      if (!channel) throw problem('needs a channel after @, e.g. slack://xoxb-…@alerts')
      const api = url.searchParams.get('api') ?? DEFAULT_SLACK_API
      if (!isHttpUrl(api)) throw problem('?api= must be an http(s) URL')
      return {kind: 'slack', via: 'token', token: username, channel, apiUrl: api.replace(/\/+$/, ''), display: `slack://…@${channel}`}
    }

    case 'slack+https':
    case 'slack+http': {
      const webhookUrl = withoutPrefix(entry)
      registerHttpSecrets(webhookUrl)
      return {kind: 'slack', via: 'webhook', webhookUrl, channel: url.searchParams.get('channel') ?? undefined, display: `${scheme}://${url.host}/…`}
    }

    case 'webhook+https':
    case 'webhook+http':
    case 'generic+https':
    case 'generic+http': {
      const target = withoutPrefix(entry)
      registerHttpSecrets(target)
      return {kind: 'webhook', url: target, display: `${scheme}://${url.host}/…`}
    }

    case 'healthchecks+https':
    case 'healthchecks+http': {
      const base = withoutPrefix(entry).replace(/\/+$/, '')
      if (url.pathname.replace(/\/+$/, '') === '') throw problem('needs the check\'s ping path, e.g. healthchecks+https://hc-ping.com/<uuid>')
      registerHttpSecrets(base)
      return {kind: 'healthchecks', url: base, display: `${scheme}://${url.host}/…`}
    }

    case 'smtp':
    case 'smtps': {
      if (!url.hostname) throw problem('needs a host, e.g. smtp://user:password@mail.example.com:587/?from=dbb@example.com&to=ops@example.com')
      const to = url.searchParams.getAll('to').flatMap((value) => value.split(/[,;]/)).map((value) => value.trim()).filter(Boolean)
      if (to.length === 0) throw problem('needs ?to=<address> (several: to=a@x,b@x or to=a@x&to=b@x)')
      const starttls = (url.searchParams.get('starttls') ?? 'auto').toLowerCase()
      if (starttls !== 'auto' && starttls !== 'required' && starttls !== 'never') throw problem('?starttls= must be auto, required or never')
      const secure = scheme === 'smtps'
      const port = url.port === '' ? (secure ? 465 : 587) : Number(url.port)
      const from = url.searchParams.get('from') ?? `dbb@${url.hostname}`
      return {
        kind: 'email',
        host: url.hostname,
        port,
        secure,
        starttls,
        user: username || undefined,
        password: password || undefined,
        from,
        to,
        display: `${scheme}://${url.hostname}:${port}`,
      }
    }

    default:
      throw new TargetUrlError(`entry ${position} has the unknown scheme "${scheme}://"; accepted: ${ACCEPTED_SCHEMES.join(', ')}`)
  }
}

/** The legacy Slack variables, as the slack:// target they stand for (SLACK_TOKEN wins over SLACK_WEBHOOK_URL, as before). */
export function slackAliasTarget(legacy: {token?: string; webhookUrl?: string; channel: string; apiUrl: string; suffix?: string}): Target | undefined {
  if (legacy.token !== undefined) {
    return {kind: 'slack', via: 'token', token: legacy.token, channel: legacy.channel, apiUrl: legacy.apiUrl.replace(/\/+$/, ''), suffix: legacy.suffix, display: `slack://…@${legacy.channel}`}
  }

  if (legacy.webhookUrl !== undefined) {
    registerHttpSecrets(legacy.webhookUrl)
    return {kind: 'slack', via: 'webhook', webhookUrl: legacy.webhookUrl, channel: legacy.channel, suffix: legacy.suffix, display: `slack+${new URL(legacy.webhookUrl).protocol.replace(/:$/, '')}://${new URL(legacy.webhookUrl).host}/…`}
  }

  return undefined
}

/** `webhook+https://x/y` → `https://x/y`. */
function withoutPrefix(entry: string): string {
  return entry.replace(/^[a-z]+\+/i, '')
}

/** An http(s) URL's path and query carry the credential (a webhook token, a ping uuid): both, and the whole URL, are secret. */
function registerHttpSecrets(httpUrl: string): void {
  registerSecret(httpUrl)
  const url = new URL(httpUrl)
  registerSecret(`${url.pathname}${url.search}`.replace(/^\/+/, ''))
  registerSecret(url.password)
}

function isHttpUrl(text: string): boolean {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol)
  } catch {
    return false
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}
