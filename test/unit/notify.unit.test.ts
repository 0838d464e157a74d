import * as fs from 'node:fs'
import * as path from 'node:path'

import {z} from 'zod'

import {loadConfig} from '../../src/config'
import {ConfigError} from '../../src/errors'
import {drillFinished} from '../../src/notify/backup-events'
import {NOTIFICATION_KINDS, buildPayload, notificationPayload} from '../../src/notify/events'
import {AlertState} from '../../src/notify/notifier'
import {signature, targetWants} from '../../src/notify/senders'
import {parseTargetUrl} from '../../src/notify/targets'
import {forgetSecrets, redactSecrets} from '../../src/secrets'

afterEach(() => forgetSecrets())

describe('notification target URLs', () => {
  it('parses every scheme into a target whose display URL carries no credential', () => {
    expect(parseTargetUrl('slack://xoxb-1-2-Secret@%23Ops-Alerts', 1)).toMatchObject({kind: 'slack', via: 'token', token: 'xoxb-1-2-Secret', channel: 'Ops-Alerts', apiUrl: 'https://slack.com/api', display: 'slack://…@Ops-Alerts'})
    expect(parseTargetUrl('slack://xoxb-9@ops?api=http://127.0.0.1:9/api/', 1)).toMatchObject({apiUrl: 'http://127.0.0.1:9/api'})
    expect(parseTargetUrl('slack+https://hooks.slack.com/services/T0/B0/XyZsecret', 1)).toMatchObject({kind: 'slack', via: 'webhook', webhookUrl: 'https://hooks.slack.com/services/T0/B0/XyZsecret', display: 'slack+https://hooks.slack.com/…'})
    expect(parseTargetUrl('webhook+https://hooks.example.com/dbb?token=abc123', 1)).toEqual({kind: 'webhook', url: 'https://hooks.example.com/dbb?token=abc123', display: 'webhook+https://hooks.example.com/…'})
    expect(parseTargetUrl('generic+http://10.0.0.5:8080/in', 1)).toMatchObject({kind: 'webhook', url: 'http://10.0.0.5:8080/in'})
    expect(parseTargetUrl('healthchecks+https://hc-ping.com/5bf6a2e0-uuid/', 1)).toEqual({kind: 'healthchecks', url: 'https://hc-ping.com/5bf6a2e0-uuid', display: 'healthchecks+https://hc-ping.com/…'})
    expect(parseTargetUrl('smtp://me%40x.org:p%40ss@mail.x.org/?from=dbb@x.org&to=a@x.org,b@x.org&starttls=required', 1)).toEqual({
      kind: 'email', host: 'mail.x.org', port: 587, secure: false, starttls: 'required', user: 'me@x.org', password: 'p@ss', from: 'dbb@x.org', to: ['a@x.org', 'b@x.org'], display: 'smtp://mail.x.org:587',
    })
    expect(parseTargetUrl('smtps://mail.x.org/?to=a@x.org', 1)).toMatchObject({secure: true, port: 465, from: 'dbb@mail.x.org'})
  })

  it('registers every credential a URL carries for redaction', () => {
    parseTargetUrl('slack://xoxb-token-redact-me@ops', 1)
    parseTargetUrl('webhook+https://hooks.example.com/path-secret-42?sig=q', 2)
    parseTargetUrl('smtp://user:pa%2Fss-word@mail.x.org/?to=a@x.org', 3)
    const line = 'xoxb-token-redact-me https://hooks.example.com/path-secret-42?sig=q path-secret-42?sig=q pa/ss-word pa%2Fss-word'
    expect(redactSecrets(line)).toBe('[redacted] [redacted] [redacted] [redacted] [redacted]')
  })

  it('a bad entry is one NOTIFY_URLS issue naming its position and the accepted schemes, never quoting the URL', () => {
    const run = () => loadConfig(['notify'], {NOTIFY_URLS: 'webhook+https://ok.example/x, ftp://u:ftp-secret-99@h/x'}, {})
    expect(run).toThrow(ConfigError)
    try {
      run()
    } catch (error) {
      const {issues} = error as ConfigError
      expect(issues).toEqual([{variable: 'NOTIFY_URLS', message: expect.stringMatching(/^entry 2 has the unknown scheme "ftp:\/\/"; accepted: slack:\/\//), example: expect.any(String)}])
      expect(issues[0].message).not.toContain('ftp-secret-99')
    }
  })

  it('SLACK_TOKEN / SLACK_WEBHOOK_URL are an alias for one slack target, added to NOTIFY_URLS (the token wins over the webhook, as before)', () => {
    const {notify} = loadConfig(['notify'], {NOTIFY_URLS: 'webhook+https://h.example/x', SLACK_TOKEN: 'xoxb-alias', SLACK_WEBHOOK_URL: 'https://hooks.slack.com/services/x', SLACK_CHANNEL: '#db', SLACK_MESSAGE_SUFFIX: '(prod)'}, {})
    expect(notify.targets.map((target) => target.kind)).toEqual(['webhook', 'slack'])
    expect(notify.targets[1]).toMatchObject({via: 'token', token: 'xoxb-alias', channel: 'db', apiUrl: 'https://slack.com/api', suffix: '(prod)'})
    expect(loadConfig(['notify'], {SLACK_WEBHOOK_URL: 'https://hooks.slack.com/services/x'}, {}).notify.targets).toEqual([
      expect.objectContaining({via: 'webhook', webhookUrl: 'https://hooks.slack.com/services/x', channel: 'sysadmin'}),
    ])
    expect(loadConfig(['notify'], {}, {}).notify).toEqual({targets: [], webhookSecret: undefined, onSuccess: false, timeoutMs: 10_000, reminderMs: 24 * 3600 * 1000})
  })
})

describe('events', () => {
  it('healthchecks targets take the backup lifecycle and the test; the others everything but backup.started', () => {
    const hc = parseTargetUrl('healthchecks+https://hc-ping.com/u-1', 1)
    const hook = parseTargetUrl('webhook+https://h.example/x', 1)
    const kinds = Object.keys(NOTIFICATION_KINDS) as (keyof typeof NOTIFICATION_KINDS)[]
    expect(kinds.filter((kind) => targetWants(hc, kind))).toEqual(['backup.started', 'backup.succeeded', 'backup.failed', 'notify.test'])
    expect(kinds.filter((kind) => targetWants(hook, kind))).toEqual(kinds.filter((kind) => kind !== 'backup.started'))
    expect(kinds).toEqual(expect.arrayContaining(['drill.failed', 'drill.passed', 'wal.stalled', 'retention.refused', 'check.failed']))
  })

  it('drill results (for the restore-drill module): drill.failed always, drill.passed opt-in; both valid payloads', () => {
    const failed = drillFinished({backupId: 'backup_20261202T030000Z.sql.gz', location: '/backups', passed: false, reason: 'table orders: 10 rows, expected 12', durationMs: 4200})
    expect(failed).toEqual({
      kind: 'drill.failed',
      summary: 'restore drill of backup_20261202T030000Z.sql.gz failed: table orders: 10 rows, expected 12',
      details: {backupId: 'backup_20261202T030000Z.sql.gz', location: '/backups', durationMs: 4200, reason: 'table orders: 10 rows, expected 12'},
    })
    const passed = drillFinished({backupId: 'b', location: '/backups', passed: true, durationMs: 1500})
    expect(passed.summary).toBe('restore drill of b passed (restored in 1.5 s)')
    expect([NOTIFICATION_KINDS['drill.failed'].optIn, NOTIFICATION_KINDS['drill.passed'].optIn]).toEqual([false, true])
    expect(notificationPayload.safeParse(buildPayload(failed)).success).toBe(true)
    expect(notificationPayload.safeParse(buildPayload(passed)).success).toBe(true)
  })

  it('the signature is GitHub-style sha256=<hex HMAC of the raw body>', () => {
    // Known answer, as `printf '{"a":1}' | openssl dgst -sha256 -hmac key` computes it.
    expect(signature('{"a":1}', 'key')).toBe('sha256=88a67f24bbcdaed0e6c997404bb79a743baf44c6bab2f4c27328e3009d22e342')
    expect(signature('{"a":1}', 'key')).toMatch(/^sha256=[0-9a-f]{64}$/)
    expect(signature('{"a":1}', 'key')).not.toBe(signature('{"a":2}', 'key'))
  })

  it('the README documents the payload schema exactly as the code declares it', () => {
    const readme = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8')
    const block = /<!-- notification-payload-schema -->\n```json\n([\s\S]*?)\n```/.exec(readme)
    expect(block).not.toBeNull()
    expect(JSON.parse(block![1])).toEqual(z.toJSONSchema(notificationPayload))
  })
})

describe('AlertState: once per change of state, then a reminder per interval', () => {
  it('raises, stays quiet, reminds, recovers, raises again', () => {
    const state = new AlertState(60_000)
    expect(state.update(false, 0)).toBeUndefined()
    expect(state.update(true, 1000)).toBe('raised')
    expect(state.update(true, 30_000)).toBeUndefined()
    expect(state.update(true, 60_999)).toBeUndefined()
    expect(state.update(true, 61_000)).toBe('reminder')
    expect(state.update(true, 100_000)).toBeUndefined()
    expect(state.update(false, 110_000)).toBe('recovered')
    expect(state.update(false, 120_000)).toBeUndefined()
    expect(state.update(true, 130_000)).toBe('raised')
  })
})
