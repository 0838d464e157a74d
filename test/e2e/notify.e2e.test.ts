import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {signatureValid, startReceiver, startSmtpReceiver} from '../helpers/notify-receivers'
import {writeLocalBackup} from '../helpers/fake-backups'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/serve'

/**
 * Notifications end to end: the built CLI against a real PostgreSQL, real HTTP receivers and a
 * real SMTP server on 127.0.0.1. A notification never changes a command's exit code, and the
 * command waits for deliveries at most NOTIFY_TIMEOUT.
 */
const WEBHOOK_SECRET = 'e2e-webhook-secret-0123456789abcdef'
const HOOK_TOKEN = 'hook-path-token-5f1e2d3c'

describe('notifications (built CLI, real PostgreSQL, real receivers)', () => {
  let cluster: PgCluster
  let storeDir: string
  const cleanups: (() => Promise<unknown>)[] = []

  beforeAll(async () => {
    cluster = await startPostgres()
    storeDir = await tempDir('dbb-notify-store-')
  })

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
  })

  async function receiver(...args: Parameters<typeof startReceiver>) {
    const started = await startReceiver(...args)
    cleanups.push(started.close)
    return started
  }

  it('dbb notify test: per-target results (--json), exit 0 when all deliver, exit 1 when one fails; no secret printed', async () => {
    const hooks = await receiver((request) => (request.url.startsWith('/down') ? {status: 503, body: 'unavailable'} : {status: 200, body: 'ok'}))
    const smtp = await startSmtpReceiver()
    cleanups.push(smtp.close)
    const smtpUrl = `smtp://${smtp.credentials.user}:${encodeURIComponent(smtp.credentials.pass)}@127.0.0.1:${smtp.port}/?to=ops@example.com`
    const good = `webhook+${hooks.url}/${HOOK_TOKEN},healthchecks+${hooks.url}/hc-uuid-0001,${smtpUrl}`
    const ok = await runCli(['notify', 'test', '--json'], {NOTIFY_URLS: good, NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET})
    expect(ok.code).toBe(0)
    const report = JSON.parse(ok.stdout)
    expect(report.ok).toBe(true)
    expect(report.results.map((result: {target: string; ok: boolean}) => [result.target, result.ok])).toEqual([
      ['webhook', true],
      ['healthchecks', true],
      ['email', true],
    ])
    expect(hooks.received.map((request) => request.url)).toEqual([`/${HOOK_TOKEN}`, '/hc-uuid-0001/log'])
    expect(smtp.mails).toHaveLength(1)

    const failing = await runCli(['notify', 'test'], {NOTIFY_URLS: `${good},webhook+${hooks.url}/down-${HOOK_TOKEN}`, NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET, NOTIFY_TIMEOUT: '2s'})
    expect(failing.code).toBe(1)
    expect(failing.stdout).toMatch(/webhook\s+webhook\+http:\/\/127\.0\.0\.1:\d+\/…\s+FAILED\s+3\s+HTTP 503: unavailable/)
    expect(failing.stdout).toMatch(/email\s+smtp:\/\/127\.0\.0\.1:\d+\s+OK/)
    const output = ok.stdout + ok.stderr + failing.stdout + failing.stderr
    for (const secret of [HOOK_TOKEN, smtp.credentials.pass, encodeURIComponent(smtp.credentials.pass), WEBHOOK_SECRET, 'hc-uuid-0001']) expect(output).not.toContain(secret)
  })

  it('NOTIFY_URLS_FILE and NOTIFY_WEBHOOK_SECRET_FILE: the targets and the key from files (Docker/Kubernetes secrets)', async () => {
    const hooks = await receiver()
    const dir = await tempDir('dbb-notify-secrets-')
    cleanups.push(() => fs.rm(dir, {recursive: true, force: true}))
    await fs.writeFile(path.join(dir, 'urls'), `webhook+${hooks.url}/${HOOK_TOKEN}\n`)
    await fs.writeFile(path.join(dir, 'key'), `${WEBHOOK_SECRET}\n`)
    const result = await runCli(['notify', 'test', '--json'], {NOTIFY_URLS_FILE: path.join(dir, 'urls'), NOTIFY_WEBHOOK_SECRET_FILE: path.join(dir, 'key')})
    expect(result.code).toBe(0)
    expect(hooks.received.map((request) => request.url)).toEqual([`/${HOOK_TOKEN}`])
    expect(signatureValid(hooks.received[0].body, hooks.received[0].headers['x-dbb-signature-256'], WEBHOOK_SECRET)).toBe(true)
    expect(result.stdout + result.stderr).not.toContain(HOOK_TOKEN)

    const both = await runCli(['notify', 'test'], {NOTIFY_URLS: `webhook+${hooks.url}/x`, NOTIFY_URLS_FILE: path.join(dir, 'urls')})
    expect(both.code).toBe(2)
    expect(both.stderr).toMatch(/NOTIFY_URLS_FILE: is set together with NOTIFY_URLS/)
  })

  it('a malformed URL is exit 2 naming NOTIFY_URLS and the accepted schemes, without echoing the URL; no target at all is exit 2 too', async () => {
    const result = await runCli(['backup', 'run'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir, NOTIFY_URLS: `webhook+https://hooks.example.com/${HOOK_TOKEN},ftp://user:ftp-password-123@host/x`})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/NOTIFY_URLS: entry 2 has the unknown scheme "ftp:\/\/"; accepted: slack:\/\/.*webhook\+https:\/\/.*healthchecks\+https:\/\/.*smtp:\/\//)
    expect(result.stderr).not.toContain('ftp-password-123')
    expect(result.stderr).not.toContain(HOOK_TOKEN)
    expect(await fs.readdir(storeDir)).toEqual([])

    const none = await runCli(['notify', 'test', '--json'], {})
    expect(none.code).toBe(2)
    expect(JSON.parse(none.stdout)).toMatchObject({error: 'CONFIG_INVALID', message: expect.stringMatching(/^NOTIFY_URLS: no notification target/)})
  })

  it('a failing dbb backup run (wrong password) delivers a signed backup.failed to the webhook and /start then /fail to healthchecks; exit 1 stays', async () => {
    const hooks = await receiver()
    const result = await runCli(['backup', 'run'], {
      ...cluster.dbbEnv(),
      DB_PASSWORD: 'wrong-password-e2e',
      BACKUP_LOCAL_DIR: storeDir,
      NOTIFY_URLS: `webhook+${hooks.url}/${HOOK_TOKEN},healthchecks+${hooks.url}/hc-uuid-0002`,
      NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET,
    })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/password authentication failed/)
    const webhook = hooks.received.find((request) => request.url === `/${HOOK_TOKEN}`)!
    expect(signatureValid(webhook.body, webhook.headers['x-dbb-signature-256'], WEBHOOK_SECRET)).toBe(true)
    const payload = JSON.parse(webhook.body)
    expect(payload).toMatchObject({schema: 'dbb.notification/v1', kind: 'backup.failed', severity: 'error', details: {type: 'logical', triggeredBy: 'cli', location: storeDir}})
    expect(payload.summary).toMatch(/password authentication failed/)
    expect(webhook.body).not.toContain('wrong-password-e2e')
    expect(hooks.received.filter((request) => request.url.startsWith('/hc-uuid-0002')).map((request) => request.url)).toEqual(['/hc-uuid-0002/start', '/hc-uuid-0002/fail'])
    expect(result.stderr).toMatch(/"event":"notify.delivered"/)
    // Deliveries are logged before it: a failed run still ends with its command.failed event.
    expect(JSON.parse(result.stderr.trim().split('\n').at(-1)!)).toMatchObject({event: 'command.failed', exitCode: 1})
    expect(result.stderr).not.toContain(HOOK_TOKEN)
  })

  it('a hanging target: the backup still succeeds with exit 0, and the CLI exits within NOTIFY_TIMEOUT of its work', async () => {
    const hanging = await receiver(() => 'hang')
    const hc = await receiver()
    const started = Date.now()
    const result = await runCli(['backup', 'run', '--json'], {
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: storeDir,
      NOTIFY_URLS: `webhook+${hanging.url}/stuck,healthchecks+${hc.url}/hc-uuid-0003`,
      NOTIFY_ON_SUCCESS: 'true',
      NOTIFY_TIMEOUT: '2s',
    })
    const elapsed = Date.now() - started
    expect(result.code).toBe(0)
    const {metadata} = JSON.parse(result.stdout)
    expect((await fs.stat(path.join(storeDir, `${metadata.id}.meta.json`))).isFile()).toBe(true)
    expect(hc.received.map((request) => request.url)).toEqual(['/hc-uuid-0003/start', '/hc-uuid-0003'])
    // The webhook got backup.succeeded (never answered); the wait for it is bounded by NOTIFY_TIMEOUT (2 s).
    expect(hanging.received.map((request) => JSON.parse(request.body).kind)).toContain('backup.succeeded')
    expect(result.stderr).toMatch(/"event":"notify.failed".*"error":"(timed out after 2s|abandoned[^"]*)"/)
    // From the moment the stuck target got the message, the CLI is gone within NOTIFY_TIMEOUT (+ its exit).
    const sentAt = hanging.received.find((request) => JSON.parse(request.body).kind === 'backup.succeeded')!.at
    expect(started + elapsed - sentAt).toBeLessThan(2000 + 2500)
  })

  it('retention refuses to delete a damaged backup: dbb prune exits 1 and retention.refused names it', async () => {
    const hooks = await receiver()
    const dir = await tempDir('dbb-notify-prune-')
    cleanups.push(() => fs.rm(dir, {recursive: true, force: true}))
    const old = new Date(Date.now() - 30 * 24 * 3600 * 1000)
    const damaged = await writeLocalBackup(dir, old)
    await fs.writeFile(path.join(dir, `${damaged.id}.meta.json`), '{"id": "trunc')
    await writeLocalBackup(dir, new Date(Date.now() - 3600 * 1000))
    const result = await runCli(['prune'], {BACKUP_LOCAL_DIR: dir, NOTIFY_URLS: `webhook+${hooks.url}/${HOOK_TOKEN}`})
    expect(result.code).toBe(1)
    expect(hooks.received).toHaveLength(1)
    const payload = JSON.parse(hooks.received[0].body)
    expect(payload).toMatchObject({kind: 'retention.refused', severity: 'warning', details: {backupIds: damaged.id, location: dir}})
    expect(payload.summary).toContain(`${damaged.id} (damaged`)
    expect(await fs.readdir(dir)).toContain(damaged.id)
  })

  it('dbb serve: a scheduled backup that fails and one that succeeds reach the webhook; /metrics counts the deliveries', async () => {
    const hooks = await receiver()
    for (const [password, kind] of [
      ['wrong-password-serve', 'backup.failed'],
      [cluster.password, 'backup.succeeded'],
    ] as const) {
      const serve = startCli(['serve'], {
        ...cluster.dbbEnv(),
        DB_PASSWORD: password,
        BACKUP_LOCAL_DIR: storeDir,
        BACKUP_NAME_PREFIX: 'served',
        API_TOKEN: 'notify-serve-token-0123456789',
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        NOTIFY_URLS: `webhook+${hooks.url}/${HOOK_TOKEN}`,
        NOTIFY_ON_SUCCESS: 'true',
      })
      const done = collect(serve)
      let stderr = ''
      serve.stderr?.on('data', (text: string) => (stderr += text))
      const payload = await waitFor(
        () => hooks.received.map((request) => JSON.parse(request.body)).find((body) => body.kind === kind),
        60_000,
        `${kind} at the webhook`,
      )
      expect(payload.details).toMatchObject({type: 'logical', triggeredBy: 'scheduler'})
      const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(stderr)![1]
      const metrics = await waitFor(async () => {
        const text = await (await fetch(`${url}/metrics`)).text()
        return /dbb_notifications_total\{[^}]*target="webhook"[^}]*outcome="delivered"[^}]*\} [1-9]/.test(text) ? text : undefined
      }, 10_000, 'the delivery in /metrics')
      expect(metrics).toMatch(/dbb_notifications_total\{[^}]*target="email"[^}]*outcome="failed"[^}]*\} 0/)
      serve.kill('SIGTERM')
      const exited = await done
      expect(exited.code).toBe(0)
      expect(exited.stdout + exited.stderr).not.toContain(HOOK_TOKEN)
      if (kind === 'backup.failed') expect(JSON.stringify(payload)).not.toContain('wrong-password-serve')
    }
  })
})
