import {createHmac} from 'node:crypto'

import {NOTIFICATION_KINDS, NotificationPayload} from './events'
import type {Target} from './targets'

/**
 * How one message reaches one target: a single attempt, bounded by `signal` (the notifier adds
 * the timeout, the retries and the logging). A failure throws DeliveryError, saying whether a
 * retry may help (a timeout, a refused connection, HTTP 5xx or 429) or not (any other 4xx, a
 * Slack API error, an SMTP 5xx answer).
 */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message)
  }
}

/** The header a webhook's HMAC-SHA256 signature of the raw body travels in: `sha256=<hex>`. */
export const SIGNATURE_HEADER = 'x-dbb-signature-256'

export interface SendContext {
  signal: AbortSignal
  timeoutMs: number
  webhookSecret?: string
}

/** Which events a target receives: healthchecks only the backup lifecycle (and the test), the others everything but `backup.started`. */
export function targetWants(target: Target, kind: NotificationPayload['kind']): boolean {
  if (target.kind === 'healthchecks') return kind in HEALTHCHECKS_PATHS
  return kind !== 'backup.started'
}

/** healthchecks.io's ping API: `/start`, the bare URL for success, `/fail`, and `/log` (recorded without changing the check's state). */
const HEALTHCHECKS_PATHS: Partial<Record<NotificationPayload['kind'], string>> = {
  'backup.started': '/start',
  'backup.succeeded': '',
  'backup.failed': '/fail',
  'notify.test': '/log',
}

export async function send(target: Target, payload: NotificationPayload, context: SendContext): Promise<void> {
  switch (target.kind) {
    case 'slack':
      return sendSlack(target, payload, context)
    case 'webhook': {
      const body = JSON.stringify(payload)
      const headers: Record<string, string> = {'content-type': 'application/json', 'x-dbb-event': payload.kind, 'x-dbb-delivery': payload.id}
      if (context.webhookSecret) headers[SIGNATURE_HEADER] = signature(body, context.webhookSecret)
      await post(target.url, body, headers, context.signal)
      return
    }

    case 'healthchecks': {
      const path = HEALTHCHECKS_PATHS[payload.kind] ?? ''
      await post(`${target.url}${path}`, `${payload.summary}\n`, {'content-type': 'text/plain; charset=utf-8'}, context.signal)
      return
    }

    case 'email':
      return sendEmail(target, payload, context)
  }
}

/** `sha256=` + hex HMAC-SHA256 of the exact body bytes, keyed with NOTIFY_WEBHOOK_SECRET (GitHub's convention). */
export function signature(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`
}

/** The line people read, in Slack and as an email subject. */
export function headline(payload: NotificationPayload): string {
  return payload.summary
}

function bodyText(payload: NotificationPayload): string {
  const facts = Object.entries(payload.details).map(([key, value]) => `${key}: ${value === null ? '-' : String(value)}`)
  return [payload.summary, '', ...facts, '', `event ${payload.kind} (${NOTIFICATION_KINDS[payload.kind].severity}) at ${payload.time} on ${payload.host}`].join('\n')
}

const SLACK_ICONS = {error: ':rotating_light:', warning: ':warning:', info: ':white_check_mark:'} as const

async function sendSlack(target: Extract<Target, {kind: 'slack'}>, payload: NotificationPayload, context: SendContext): Promise<void> {
  const text = `${SLACK_ICONS[payload.severity]} ${payload.summary}${target.suffix ? ` ${target.suffix}` : ''}`
  if (target.via === 'webhook') {
    await post(target.webhookUrl, JSON.stringify({...(target.channel ? {channel: target.channel} : {}), text}), {'content-type': 'application/json; charset=utf-8'}, context.signal)
    return
  }

  const body = await post(
    `${target.apiUrl}/chat.postMessage`,
    JSON.stringify({channel: target.channel, text}),
    {'content-type': 'application/json; charset=utf-8', authorization: `Bearer ${target.token}`},
    context.signal,
  )
  // chat.postMessage answers 200 with {"ok": false, "error": "…"} when it refuses; only rate limits are worth a retry.
  let answer: {ok?: boolean; error?: string} | undefined
  try {
    answer = JSON.parse(body) as {ok?: boolean; error?: string}
  } catch {
    answer = undefined
  }

  if (!answer?.ok) throw new DeliveryError(`Slack answered ${answer?.error ?? 'an unexpected response'}`, answer?.error === 'ratelimited')
}

/** POSTs and returns the answer's text; HTTP 5xx and 429 are retryable, other non-2xx are not. */
async function post(url: string, body: string, headers: Record<string, string>, signal: AbortSignal): Promise<string> {
  let response: Response
  try {
    response = await fetch(url, {method: 'POST', headers, body, signal, redirect: 'manual'})
  } catch (error) {
    throw new DeliveryError(describeFetchError(error, signal), true)
  }

  let text: string
  try {
    text = await response.text()
  } catch (error) {
    throw new DeliveryError(describeFetchError(error, signal), true)
  }

  if (response.status < 200 || response.status >= 300) {
    throw new DeliveryError(`HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ''}`, response.status >= 500 || response.status === 429)
  }

  return text
}

function describeFetchError(error: unknown, signal: AbortSignal): string {
  if (signal.aborted) return reasonText(signal.reason)
  const cause = (error as {cause?: {code?: string; message?: string}}).cause
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error))
}

export function reasonText(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason ?? 'aborted')
}

/** Node's codes for a TLS certificate that failed verification (self-signed, unknown CA, wrong host name, expired). */
const CERTIFICATE_ERRORS = /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID|CERT_UNTRUSTED|CERT_SIGNATURE_FAILURE)$/

function untrustedCertificate(error: unknown): string | undefined {
  for (let current = error as {code?: string; cause?: unknown} | undefined, depth = 0; current && depth < 4; current = current.cause as typeof current, depth++) {
    if (typeof current.code === 'string' && CERTIFICATE_ERRORS.test(current.code)) return current.code
  }

  const message = error instanceof Error ? error.message : ''
  return /self[- ]signed certificate|unable to verify the first certificate|certificate has expired|Hostname\/IP does not match/i.test(message) ? 'certificate verification failed' : undefined
}

async function sendEmail(target: Extract<Target, {kind: 'email'}>, payload: NotificationPayload, context: SendContext): Promise<void> {
  // Loaded only when an email target is configured: most setups never send mail.
  const nodemailer = require('nodemailer') as typeof import('nodemailer')
  const transport = nodemailer.createTransport({
    host: target.host,
    port: target.port,
    secure: target.secure,
    requireTLS: target.starttls === 'required',
    ignoreTLS: target.starttls === 'never',
    auth: target.user === undefined ? undefined : {user: target.user, pass: target.password ?? ''},
    connectionTimeout: context.timeoutMs,
    greetingTimeout: context.timeoutMs,
    socketTimeout: context.timeoutMs,
  })
  const onAbort = () => transport.close()
  context.signal.addEventListener('abort', onAbort, {once: true})
  try {
    await Promise.race([
      transport.sendMail({
        from: target.from,
        to: target.to,
        subject: `[dbb] ${headline(payload)}`,
        text: bodyText(payload),
        headers: {'X-Dbb-Event': payload.kind, 'X-Dbb-Delivery': payload.id},
      }),
      new Promise<never>((_, reject) => {
        if (context.signal.aborted) reject(context.signal.reason)
        context.signal.addEventListener('abort', () => reject(context.signal.reason), {once: true})
      }),
    ])
  } catch (error) {
    if (context.signal.aborted) throw new DeliveryError(reasonText(context.signal.reason), true)
    const smtp = error as {responseCode?: number; code?: string; message?: string; cause?: {code?: string}}
    const untrusted = untrustedCertificate(error)
    // An untrusted certificate does not become trusted by retrying: say how to trust it, once.
    if (untrusted) {
      throw new DeliveryError(
        `the SMTP server's TLS certificate is not trusted (${untrusted}: ${smtp.message ?? String(error)}); ` +
          `trust its CA with NODE_EXTRA_CA_CERTS=/path/to/ca.pem in dbb's environment, or give the server a certificate from a public CA for the host name in the URL`,
        false,
      )
    }

    // SMTP 5xx is a permanent refusal (bad address, authentication failed); 4xx and connection errors may pass later.
    const permanent = typeof smtp.responseCode === 'number' && smtp.responseCode >= 500
    throw new DeliveryError(smtp.message ?? String(error), !permanent && smtp.code !== 'EAUTH')
  } finally {
    context.signal.removeEventListener('abort', onAbort)
    transport.close()
  }
}
