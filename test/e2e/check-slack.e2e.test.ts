import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import type {AddressInfo} from 'node:net'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'

interface Received {
  url: string
  authorization?: string
  body: {channel?: string; text?: string}
}

/** A local stand-in for Slack's Web API (and a webhook endpoint), recording what reaches it. */
async function startSlack(answer: (request: Received) => {status: number; body: string}) {
  const received: Received[] = []
  const server = http.createServer((request, response) => {
    let text = ''
    request.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
    request.on('end', () => {
      const entry = {url: request.url ?? '', authorization: request.headers.authorization, body: JSON.parse(text || '{}')}
      received.push(entry)
      const {status, body} = answer(entry)
      response.writeHead(status, {'content-type': 'application/json'}).end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {received, url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(resolve))}
}

describe('dbb check (real backups and WAL in local storage, a local Slack stand-in)', () => {
  let cluster: PgCluster
  let storeDir: string
  let walDir: string
  const token = 'xoxb-test-token-0123456789'

  beforeAll(async () => {
    cluster = await startPostgres()
    storeDir = await tempDir('dbb-check-store-')
    walDir = await tempDir('dbb-check-wal-')
    const env = {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir}
    expect((await runCli(['backup', 'run', '--json'], env)).code).toBe(0)
    const base = await runCli(['backup', 'run', '--type', 'base', '--json'], env)
    expect(base.code).toBe(0)
    // Archive by hand what the base backup needs (its first segment to the current one), as archive_command would.
    const first: string = JSON.parse(base.stdout).metadata.firstWalSegment
    const current = await cluster.psql('SELECT pg_walfile_name(pg_current_wal_lsn())')
    const segments = (await fs.readdir(path.join(cluster.dataDir, 'pg_wal'))).filter((name) => /^[0-9A-F]{24}$/.test(name) && name >= first && name <= current)
    expect(segments[0]).toBe(first)
    for (const segment of segments) {
      await fs.copyFile(path.join(cluster.dataDir, 'pg_wal', segment), path.join(walDir, segment))
      expect((await runCli(['wal', 'push', path.join(walDir, segment)], {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    }
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(walDir, {recursive: true, force: true})
  })

  it('passes with fresh backups and WAL: exit 0, a table, no Slack message', async () => {
    const slack = await startSlack(() => ({status: 200, body: '{"ok":true}'}))
    try {
      const env = {BACKUP_LOCAL_DIR: storeDir, SLACK_TOKEN: token, SLACK_API_URL: `${slack.url}/api`}
      const json = await runCli(['check', '--json'], env)
      expect(json.code).toBe(0)
      const report = JSON.parse(json.stdout)
      expect(report.ok).toBe(true)
      expect(report.checks.map((check: {name: string; status: string}) => [check.name, check.status])).toEqual([
        ['base-backup', 'pass'],
        ['wal', 'pass'],
        ['logical-backup', 'pass'],
        ['drill', 'not-configured'],
      ])
      expect(report.checks[0].maxAgeSeconds).toBe((10_080 + 5) * 60)
      expect(report.checks[1].maxAgeSeconds).toBe(300 + 120)
      expect(report.checks[2].maxAgeSeconds).toBe((24 * 60 + 5) * 60)

      const table = await runCli(['check'], env)
      expect(table.code).toBe(0)
      expect(table.stdout).toMatch(/^CHECK\s+STATUS\s+NEWEST\s+AGE\s+LIMIT\s+DETAIL/)
      expect(table.stdout).toMatch(/base-backup\s+PASS\s+backup_\d{8}T\d{6}Z\.tar\.gz/)
      expect(slack.received).toEqual([])
    } finally {
      await slack.close()
    }
  })

  it('fails when stale: exit 1, and Slack gets the channel and a text naming the failing checks and ages', async () => {
    // Age what is stored, as if nothing had happened for two hours.
    const twoHoursAgo = new Date(Date.now() - 2 * 3600 * 1000)
    for (const file of await fs.readdir(path.join(storeDir, 'wal'))) await fs.utimes(path.join(storeDir, 'wal', file), twoHoursAgo, twoHoursAgo)
    for (const file of (await fs.readdir(storeDir)).filter((name) => name.endsWith('.tar.gz.meta.json'))) {
      const sidecar = JSON.parse(await fs.readFile(path.join(storeDir, file), 'utf8'))
      // Ages count from when a backup finished: start + duration.
      const createdAt = new Date(twoHoursAgo.getTime() - sidecar.durationMs).toISOString()
      await fs.writeFile(path.join(storeDir, file), JSON.stringify({...sidecar, createdAt}))
    }

    const slack = await startSlack(() => ({status: 200, body: '{"ok":true,"ts":"1.2"}'}))
    try {
      const result = await runCli(['check', '--json'], {
        BACKUP_LOCAL_DIR: storeDir,
        BASE_BACKUP_INTERVAL_MINUTES: '60',
        CHECKPOINT_TIMEOUT_SECONDS: '60',
        CHECK_LOGICAL_BACKUP: 'false',
        SLACK_TOKEN: token,
        SLACK_CHANNEL: 'ops-alerts',
        SLACK_MESSAGE_SUFFIX: '(staging)',
        SLACK_API_URL: `${slack.url}/api`,
      })
      expect(result.code).toBe(1)
      const report = JSON.parse(result.stdout)
      expect(report.ok).toBe(false)
      expect(report.checks.map((check: {name: string; status: string}) => [check.name, check.status])).toEqual([
        ['base-backup', 'fail'],
        ['wal', 'fail'],
        ['logical-backup', 'off'],
        ['drill', 'not-configured'],
      ])
      // SLACK_TOKEN is an alias of slack://<token>@<SLACK_CHANNEL>: one delivery, its URL without the token.
      expect(report.notifications).toEqual([
        {target: 'slack', url: 'slack://…@ops-alerts', event: 'check.failed', ok: true, attempts: 1, durationMs: expect.any(Number)},
      ])

      expect(slack.received).toHaveLength(1)
      const [message] = slack.received
      expect(message.url).toBe('/api/chat.postMessage')
      expect(message.authorization).toBe(`Bearer ${token}`)
      expect(message.body.channel).toBe('ops-alerts')
      expect(message.body.text).toMatch(/base-backup: newest base backup is 2h0m old \(limit 1h5m\)/)
      expect(message.body.text).toMatch(/wal: newest archived WAL segment is 2h0m old \(limit 3m0s\)/)
      expect(message.body.text).not.toMatch(/logical-backup/)
      expect(message.body.text?.endsWith(' (staging)')).toBe(true)
      expect(result.stdout + result.stderr).not.toContain(token)
    } finally {
      await slack.close()
    }
  })

  it('still reports the failed check (exit 1) when Slack refuses the message, and logs why; webhook posts to the default channel', async () => {
    const slack = await startSlack((request) =>
      request.url === '/hook' ? {status: 500, body: 'internal_error'} : {status: 200, body: '{"ok":false,"error":"channel_not_found"}'},
    )
    try {
      const base = {BACKUP_LOCAL_DIR: storeDir, CHECKPOINT_TIMEOUT_SECONDS: '60', CHECK_BASE_BACKUP: 'false', CHECK_LOGICAL_BACKUP: 'false'}
      const refused = await runCli(['check', '--json'], {...base, SLACK_TOKEN: token, SLACK_API_URL: `${slack.url}/api`})
      expect(refused.code).toBe(1)
      // A Slack API refusal is final (no retry); the check's exit code is unchanged.
      expect(JSON.parse(refused.stdout).notifications).toEqual([expect.objectContaining({target: 'slack', ok: false, attempts: 1, error: 'Slack answered channel_not_found'})])
      expect(refused.stderr).toMatch(/"event":"notify.failed"/)

      const webhook = await runCli(['check'], {...base, SLACK_WEBHOOK_URL: `${slack.url}/hook`})
      expect(webhook.code).toBe(1)
      expect(webhook.stdout).toMatch(/wal\s+FAIL/)
      expect(webhook.stdout).toMatch(/Notification to slack\+http:\/\/127\.0\.0\.1:\d+\/… failed: HTTP 500: internal_error/)
      // HTTP 500 is worth a retry: three attempts in all.
      expect(slack.received.map((entry) => [entry.url, entry.body.channel, entry.authorization])).toEqual([
        ['/api/chat.postMessage', 'sysadmin', `Bearer ${token}`],
        ['/hook', 'sysadmin', undefined],
        ['/hook', 'sysadmin', undefined],
        ['/hook', 'sysadmin', undefined],
      ])
      expect(webhook.stdout + webhook.stderr).not.toContain(`${slack.url}/hook`)
    } finally {
      await slack.close()
    }
  })

  it('rejects bad settings with exit 2 naming the variable', async () => {
    const result = await runCli(['check'], {BACKUP_LOCAL_DIR: storeDir, CHECK_WAL: 'maybe', SLACK_API_URL: 'ftp://x'})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/CHECK_WAL: must be true or false \(example: CHECK_WAL=false\)/)
    expect(result.stderr).toMatch(/SLACK_API_URL: must be an http\(s\) URL/)
  })
})
