import {Registry} from 'prom-client'

import {loadConfig} from '../../src/config'
import {notificationPayload} from '../../src/notify/events'
import {Notifier} from '../../src/notify/notifier'
import {captureLogger} from '../helpers/serve'
import {signatureValid, startReceiver, startSmtpReceiver} from '../helpers/notify-receivers'

/**
 * The notification layer against real servers on 127.0.0.1 (Node's http server as Slack, a
 * webhook receiver and healthchecks.io; the smtp-server package as a mail server): the real
 * fetch and nodemailer clients, no mocks.
 */
const WEBHOOK_SECRET = 'whsec-0123456789abcdef-integration'

function notifierFor(values: Record<string, string>) {
  const capture = captureLogger('debug')
  const config = loadConfig(['notify'], values, {}).notify
  return {notifier: new Notifier(config, capture.logger), ...capture}
}

describe('notification delivery (real local HTTP and SMTP servers)', () => {
  it('Slack bot token: chat.postMessage on the ?api= base with the bearer token; incoming webhook: the text to the hook', async () => {
    const slack = await startReceiver((request) => ({status: 200, body: request.url.includes('chat.postMessage') ? '{"ok":true}' : 'ok'}))
    const token = 'xoxb-1111-2222-slacksecret'
    try {
      const {notifier, text} = notifierFor({
        NOTIFY_URLS: `slack://${token}@ops?api=${slack.url}/api,slack+${slack.url}/services/T000/B000/hooksecret`,
      })
      const results = await notifier.deliver({kind: 'backup.failed', summary: 'logical backup failed (cli) on /backups: password authentication failed'})
      expect(results.map((result) => [result.target, result.ok])).toEqual([
        ['slack', true],
        ['slack', true],
      ])
      const api = slack.received.find((request) => request.url === '/api/chat.postMessage')!
      expect(api.headers.authorization).toBe(`Bearer ${token}`)
      expect(JSON.parse(api.body)).toEqual({channel: 'ops', text: ':rotating_light: logical backup failed (cli) on /backups: password authentication failed'})
      const hook = slack.received.find((request) => request.url === '/services/T000/B000/hooksecret')!
      expect(JSON.parse(hook.body).text).toMatch(/^:rotating_light: logical backup failed/)
      expect(text()).toMatch(/"event":"notify.delivered"/)
      expect(text()).not.toContain(token)
      expect(text()).not.toContain('hooksecret')
    } finally {
      await slack.close()
    }
  })

  it('webhook: a versioned JSON payload that validates against the schema, signed with HMAC-SHA256 over the raw body', async () => {
    const receiver = await startReceiver()
    try {
      const {notifier} = notifierFor({NOTIFY_URLS: `webhook+${receiver.url}/hooks/dbb-receiver-token`, NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET})
      const [result] = await notifier.deliver({kind: 'drill.failed', summary: 'drill of backup_x failed: table orders has 10 rows, expected 12', details: {backupId: 'backup_x'}})
      expect(result).toMatchObject({target: 'webhook', ok: true, attempts: 1})
      const [request] = receiver.received
      expect(request.method).toBe('POST')
      expect(request.headers['content-type']).toBe('application/json')
      expect(signatureValid(request.body, request.headers['x-dbb-signature-256'], WEBHOOK_SECRET)).toBe(true)
      expect(signatureValid(request.body, request.headers['x-dbb-signature-256'], 'another-secret-0123456')).toBe(false)
      const payload = notificationPayload.parse(JSON.parse(request.body))
      expect(payload).toMatchObject({schema: 'dbb.notification/v1', kind: 'drill.failed', severity: 'error', details: {backupId: 'backup_x'}})
      expect(request.headers['x-dbb-event']).toBe('drill.failed')
      expect(request.headers['x-dbb-delivery']).toBe(payload.id)
    } finally {
      await receiver.close()
    }
  })

  it('healthchecks: /start, then the bare URL on success, /fail on failure, /log for the test; other events are not pinged', async () => {
    const hc = await startReceiver()
    try {
      const {notifier} = notifierFor({NOTIFY_URLS: `healthchecks+${hc.url}/ping/5bf6a2e0-hc-uuid`})
      await notifier.deliver({kind: 'backup.started', summary: 'logical backup started'})
      await notifier.deliver({kind: 'backup.succeeded', summary: 'logical backup stored'})
      await notifier.deliver({kind: 'check.failed', summary: 'not for healthchecks'})
      await notifier.deliver({kind: 'backup.started', summary: 'logical backup started'})
      await notifier.deliver({kind: 'backup.failed', summary: 'logical backup failed: connection refused'})
      await notifier.deliver({kind: 'notify.test', summary: 'test'}, {allTargets: true})
      expect(hc.received.map((request) => `${request.method} ${request.url}`)).toEqual([
        'POST /ping/5bf6a2e0-hc-uuid/start',
        'POST /ping/5bf6a2e0-hc-uuid',
        'POST /ping/5bf6a2e0-hc-uuid/start',
        'POST /ping/5bf6a2e0-hc-uuid/fail',
        'POST /ping/5bf6a2e0-hc-uuid/log',
      ])
      // The log tail healthchecks shows: the summary.
      expect(hc.received[3].body).toBe('logical backup failed: connection refused\n')
    } finally {
      await hc.close()
    }
  })

  it('email: a real SMTP server receives the message, authenticated with the URL\'s user and (percent-encoded) password', async () => {
    const smtp = await startSmtpReceiver()
    try {
      const password = encodeURIComponent(smtp.credentials.pass)
      const {notifier, text} = notifierFor({
        NOTIFY_URLS: `smtp://${smtp.credentials.user}:${password}@127.0.0.1:${smtp.port}/?from=dbb@db.example&to=ops@example.com%2Conc@example.com&starttls=auto`,
      })
      const [result] = await notifier.deliver({kind: 'wal.stalled', summary: 'WAL archiving stalled on /backups: newest archived WAL segment is 2h0m old'})
      expect(result).toMatchObject({target: 'email', ok: true, url: `smtp://127.0.0.1:${smtp.port}`})
      expect(smtp.mails).toHaveLength(1)
      const [mail] = smtp.mails
      expect(mail).toMatchObject({from: 'dbb@db.example', to: ['ops@example.com', 'onc@example.com'], user: 'dbb-mailer'})
      expect(mail.data).toMatch(/^Subject: \[dbb\] WAL archiving stalled on \/backups/m)
      expect(mail.data).toMatch(/X-Dbb-Event: wal.stalled/)
      expect(text()).not.toContain(smtp.credentials.pass)
      expect(text()).not.toContain(password)
    } finally {
      await smtp.close()
    }
  })

  it('email: a wrong password is a permanent failure (one attempt), reported without the password; starttls=required refuses a server without STARTTLS', async () => {
    const smtp = await startSmtpReceiver()
    try {
      const wrong = 'wrong-smtp-password-77'
      const {notifier, text} = notifierFor({NOTIFY_URLS: `smtp://dbb-mailer:${wrong}@127.0.0.1:${smtp.port}/?to=ops@example.com`})
      const [result] = await notifier.deliver({kind: 'backup.failed', summary: 'x'})
      expect(result).toMatchObject({ok: false, attempts: 1})
      expect(result.error).toMatch(/Invalid login: 535/)
      expect(JSON.stringify(result) + text()).not.toContain(wrong)

      const tls = notifierFor({NOTIFY_URLS: `smtp://dbb-mailer:${encodeURIComponent(smtp.credentials.pass)}@127.0.0.1:${smtp.port}/?to=ops@example.com&starttls=required`})
      const [refused] = await tls.notifier.deliver({kind: 'backup.failed', summary: 'x'})
      expect(refused.ok).toBe(false)
      expect(refused.error).toMatch(/STARTTLS/i)
      expect(smtp.mails).toHaveLength(0)
    } finally {
      await smtp.close()
    }
  })

  it('retries: 500 then 200 is delivered on the second attempt; a 400 is not retried', async () => {
    const receiver = await startReceiver((request, index) => (request.url.startsWith('/flaky') ? (index === 0 ? {status: 500, body: 'busy'} : {status: 200}) : {status: 400, body: 'bad'}))
    try {
      const registry = new Registry()
      const {notifier, lines} = notifierFor({NOTIFY_URLS: `webhook+${receiver.url}/flaky,webhook+${receiver.url}/broken`})
      notifier.attachMetrics(registry)
      const [flaky, broken] = await notifier.deliver({kind: 'backup.failed', summary: 'x'})
      expect(flaky).toMatchObject({ok: true, attempts: 2})
      expect(broken).toMatchObject({ok: false, attempts: 1, error: 'HTTP 400: bad'})
      expect(receiver.received.filter((request) => request.url === '/flaky')).toHaveLength(2)
      expect(lines().filter((line) => line.event === 'notify.failed')).toEqual([expect.objectContaining({target: 'webhook', url: `webhook+${receiver.url}/…`, kind: 'backup.failed'})])
      const metrics = await registry.metrics()
      expect(metrics).toMatch(/dbb_notifications_total\{target="webhook",outcome="delivered"\} 1/)
      expect(metrics).toMatch(/dbb_notifications_total\{target="webhook",outcome="failed"\} 1/)
      expect(metrics).toMatch(/dbb_notifications_total\{target="email",outcome="failed"\} 0/)
    } finally {
      await receiver.close()
    }
  })

  it('a hanging target times out per attempt (3 attempts), an unreachable one fails fast; settle() bounds the wait', async () => {
    const hanging = await startReceiver(() => 'hang')
    const closed = await startReceiver()
    await closed.close()
    try {
      const {notifier} = notifierFor({NOTIFY_URLS: `webhook+${hanging.url}/stuck,webhook+${closed.url}/gone`, NOTIFY_TIMEOUT: '300ms'})
      const started = Date.now()
      const [stuck, gone] = await notifier.deliver({kind: 'backup.failed', summary: 'x'})
      expect(stuck).toMatchObject({ok: false, attempts: 3, error: 'timed out after 300ms'})
      expect(gone).toMatchObject({ok: false, attempts: 3, error: 'ECONNREFUSED'})
      // 3 × 300 ms + 0.5 s + 1 s of backoff.
      expect(Date.now() - started).toBeLessThan(5000)

      const settling = notifierFor({NOTIFY_URLS: `webhook+${hanging.url}/stuck`, NOTIFY_TIMEOUT: '2s'})
      settling.notifier.emit({kind: 'backup.failed', summary: 'x'})
      const before = Date.now()
      await settling.notifier.settle(400)
      expect(Date.now() - before).toBeLessThan(1500)
      expect(settling.lines().find((line) => line.event === 'notify.failed')).toMatchObject({error: expect.stringMatching(/^abandoned/)})
    } finally {
      await hanging.close()
    }
  })

  it('good news is opt-in: backup.succeeded reaches Slack/webhooks only with NOTIFY_ON_SUCCESS=true (healthchecks always)', async () => {
    const receiver = await startReceiver()
    try {
      const off = notifierFor({NOTIFY_URLS: `webhook+${receiver.url}/w,healthchecks+${receiver.url}/hc`})
      off.notifier.emit({kind: 'backup.succeeded', summary: 'stored'})
      await off.notifier.settle()
      expect(receiver.received.map((request) => request.url)).toEqual([])
      const on = notifierFor({NOTIFY_URLS: `webhook+${receiver.url}/w,healthchecks+${receiver.url}/hc`, NOTIFY_ON_SUCCESS: 'true'})
      on.notifier.emit({kind: 'backup.succeeded', summary: 'stored'})
      await on.notifier.settle()
      expect(receiver.received.map((request) => request.url).sort()).toEqual(['/hc', '/w'])
    } finally {
      await receiver.close()
    }
  })
})
