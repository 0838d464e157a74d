import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import type {AddressInfo} from 'node:net'

import {CliResult, collect, startCli} from '../helpers/cli'
import {lockTable, pollUntil, releaseLock, waitUntilDumpBlocked, waitUntilLocked} from '../helpers/fault-invariants'
import {PgCluster, freePort, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {seedDatabase} from '../helpers/seed'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

/** Distinctive values, so a leak anywhere is found by a plain substring search. */
const SECRETS = {
  dbPassword: 'Db-Secret-Pa55-7f3a9c1e',
  wrongPassword: 'Wrong-Secret-Pa55-2b8d4f',
  apiToken: 'api-secret-token-5e1d9b7c3a0f2468',
  s3Secret: 'S3-secret-access-key-9c8b7a6f5e4d',
  slackToken: 'xoxb-slack-secret-4d3c2b1a0f9e',
}

/**
 * Issue 8, "Secrets": a backup, failed backups, a restore, a failed check alerting Slack and API
 * calls (good and bad tokens, a token in the URL), all with known secret values; then none of them
 * may appear in any captured log line, error message, HTTP answer (/info, /metrics, errors), or
 * the command line of any program dbb started (pg_dump, psql), read from /proc while they ran.
 */
describe('secrets never leak (real PostgreSQL, real S3-protocol server, a local Slack stand-in)', () => {
  let cluster: PgCluster
  let s3: S3Server
  const captured: string[] = []
  const commandLines: string[] = []
  let watching = true

  /** Records the command line of every descendant of `root` while it runs (polling /proc every 5 ms). */
  function watchDescendants(root: number): Promise<void> {
    // Keyed by pid and command line: a child caught between fork and exec still shows its parent's
    // command line, and must be read again once it has become psql or pg_dump.
    const seen = new Set<string>()
    const visit = async (pid: number): Promise<void> => {
      const children = (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number)
      for (const child of children) {
        const cmdline = (await fs.readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ').trim()
        if (cmdline && !seen.has(`${child} ${cmdline}`)) {
          seen.add(`${child} ${cmdline}`)
          commandLines.push(cmdline)
        }

        await visit(child)
      }
    }

    return (async () => {
      while (watching) {
        try {
          process.kill(root, 0)
        } catch {
          return
        }

        await visit(root)
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    })()
  }

  async function run(args: string[], env: Record<string, string>): Promise<CliResult> {
    const child = startCli(args, env)
    const watcher = watchDescendants(child.pid!)
    const result = await collect(child)
    await watcher
    captured.push(result.stdout, result.stderr)
    return result
  }

  const dbEnv = () => ({...cluster.dbbEnv('shop'), DB_PASSWORD: SECRETS.dbPassword})
  const s3Env = () => s3.dbbEnv({S3_PREFIX: 'secrets', AWS_SECRET_ACCESS_KEY: SECRETS.s3Secret})

  beforeAll(async () => {
    ;[cluster, s3] = await Promise.all([startPostgres({password: SECRETS.dbPassword}), startS3Server()])
    await seedDatabase(cluster, 'shop', 60_000)
  }, 120_000)

  afterAll(async () => {
    watching = false
    await Promise.all([cluster?.destroy(), s3?.destroy()])
  })

  it('a backup, failed backups, a restore and a failed check: no secret in output or child command lines', async () => {
    expect((await run(['backup', 'run', '--json'], {...dbEnv(), ...s3Env()})).code).toBe(0)
    expect((await run(['backup', 'run'], {...dbEnv(), ...s3Env(), DB_PASSWORD: SECRETS.wrongPassword})).code).toBe(1)
    expect((await run(['backup', 'run'], {...dbEnv(), ...s3Env(), DB_NAME: 'no_such_db'})).code).toBe(1)
    const unreachable = `http://127.0.0.1:${await freePort()}`
    expect((await run(['backup', 'run'], {...dbEnv(), ...s3.dbbEnv({S3_PREFIX: 'secrets', AWS_SECRET_ACCESS_KEY: SECRETS.s3Secret}, unreachable)})).code).toBe(1)

    const restore = await run(['restore', 'latest', '--target-db', 'shop_restored', '--force'], {...dbEnv(), ...s3Env()})
    expect([restore.code, restore.stderr.slice(-300)]).toEqual([0, expect.any(String)])
    expect(await cluster.psql('SELECT count(*) FROM events', 'shop_restored')).toBe('60000')

    const slack = await startSlackStandIn()
    try {
      const check = await run(['check'], {...s3Env(), SLACK_TOKEN: SECRETS.slackToken, SLACK_API_URL: `${slack.url}/api`, CHECK_BASE_BACKUP: 'true'})
      expect(check.code).toBe(1)
      // The token went where it belongs, and only there.
      expect(slack.authorizations).toContain(`Bearer ${SECRETS.slackToken}`)
    } finally {
      await slack.close()
    }

    expect(commandLines.some((line) => /(^|\/)pg_dump /.test(line))).toBe(true)
    expect(commandLines.some((line) => /(^|\/)psql /.test(line))).toBe(true)
    expectNoSecret('CLI output and child command lines', [...captured, ...commandLines])
  })

  it('dbb serve: API calls, /info, /metrics, a backup through the API; pg_dump’s command line read while it waits', async () => {
    const port = await freePort()
    const child: ChildProcess = startCli(['serve'], {
      ...dbEnv(),
      ...s3Env(),
      API_TOKEN: SECRETS.apiToken,
      SLACK_TOKEN: SECRETS.slackToken,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      LOG_LEVEL: 'debug',
    })
    const result = collect(child)
    let stderr = ''
    child.stderr?.on('data', (text: string) => (stderr += text))
    const url = `http://127.0.0.1:${port}`
    const answers: string[] = []
    const call = async (path: string, init: RequestInit = {}) => {
      const response = await fetch(`${url}${path}`, init)
      const text = await response.text()
      answers.push(`${response.status} ${JSON.stringify([...response.headers])} ${text}`)
      return {status: response.status, text}
    }

    const auth = {Authorization: `Bearer ${SECRETS.apiToken}`}
    let locker: ChildProcess | undefined
    try {
      await pollUntil(() => stderr.includes('"event":"server.listening"'), 'dbb serve to listen')
      locker = lockTable(cluster, 'shop', 'events')
      await waitUntilLocked(cluster, 'shop', 'events')
      expect((await call('/api/v1/backups', {method: 'POST', headers: auth})).status).toBe(202)
      await waitUntilDumpBlocked(cluster)
      const pgDump = (await childCommandLines(child.pid!)).filter((line) => /(^|\/)pg_dump /.test(line))
      expect(pgDump).toHaveLength(1)
      commandLines.push(...pgDump)
      await releaseLock(cluster, locker)
      await pollUntil(async () => JSON.parse((await call('/api/v1/backups/jobs', {headers: auth})).text)[0]?.status === 'succeeded', 'the API backup')

      for (const path of ['/health', '/info', '/metrics']) expect((await call(path)).status).toBe(200)
      expect((await call('/api/v1/backups', {headers: auth})).status).toBe(200)
      expect((await call('/api/v1/backups/latest/download', {headers: auth})).status).toBe(200)
      expect((await call(`/api/v1/backups?access_token=${SECRETS.apiToken}`)).status).toBe(401)
      expect((await call('/api/v1/backups', {headers: {Authorization: `Bearer ${SECRETS.apiToken}-wrong`}})).status).toBe(401)
      expect((await call('/api/v1/backups', {headers: {Authorization: `Basic ${SECRETS.apiToken}`}})).status).toBe(401)
    } finally {
      await releaseLock(cluster, locker)
      child.kill('SIGTERM')
    }

    const {code} = await result
    expect(code).toBe(0)
    expect(stderr).toContain('"event":"http.request"')
    expectNoSecret('dbb serve logs, HTTP answers and pg_dump’s command line', [stderr, ...answers, ...commandLines])
  })
})

function expectNoSecret(where: string, texts: string[]): void {
  const all = texts.join('\n')
  // A secret also counts as leaked in part: its distinctive middle, or URL-encoded.
  for (const [name, secret] of Object.entries(SECRETS)) {
    for (const form of [secret, secret.slice(4, -4), encodeURIComponent(secret), Buffer.from(secret).toString('base64')]) {
      expect([where, name, all.includes(form)]).toEqual([where, name, false])
    }
  }
}

async function childCommandLines(pid: number): Promise<string[]> {
  const children = (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean)
  return Promise.all(children.map(async (child) => (await fs.readFile(`/proc/${child}/cmdline`, 'utf8')).replaceAll('\0', ' ')))
}

/** Slack's Web API stand-in: refuses every message (as Slack does for a revoked token), recording the Authorization it got. */
async function startSlackStandIn() {
  const authorizations: string[] = []
  const server = http.createServer((request, response) => {
    authorizations.push(request.headers.authorization ?? '')
    request.resume()
    request.on('end', () => response.writeHead(200, {'content-type': 'application/json'}).end('{"ok":false,"error":"invalid_auth"}'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {authorizations, url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(resolve))}
}
