import {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs/promises'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, holdTableLock, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {jsonOf, waitFor} from '../helpers/serve'

const TOKEN = 'e2e-serve-token-0123456789abcdef'

describe('dbb serve as a process: configuration errors, start, graceful shutdown on SIGTERM', () => {
  let cluster: PgCluster

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 500)
  })

  afterAll(async () => {
    await cluster?.destroy()
  })

  /** Starts `dbb serve`, waits until it listens, and collects its output. */
  async function serve(env: Record<string, string>) {
    const dir = await tempDir('dbb-serve-e2e-')
    const port = await freePort()
    const child: ChildProcess = startCli(['serve'], {
      ...cluster.dbbEnv('shop'),
      BACKUP_LOCAL_DIR: dir,
      API_TOKEN: TOKEN,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(port),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      ...env,
    })
    const result = collect(child)
    let stderr = ''
    child.stderr?.on('data', (text: string) => (stderr += text))
    await waitFor(() => (stderr.includes('"event":"server.listening"') ? true : undefined), 20_000, 'dbb serve to listen')
    const url = `http://127.0.0.1:${port}`
    const post = () => fetch(`${url}/api/v1/backups`, {method: 'POST', headers: {Authorization: `Bearer ${TOKEN}`}})
    const job = async (jobId: string) =>
      jsonOf(fetch(`${url}/api/v1/backups/jobs/${jobId}`, {headers: {Authorization: `Bearer ${TOKEN}`}}))
    return {child, result, dir, url, post, job, output: () => stderr}
  }

  it('refuses a short API_TOKEN (suggesting openssl rand -hex 32) and BACKUP_INTERVAL with BACKUP_SCHEDULE, exit code 2', async () => {
    const dir = await tempDir()
    const base = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: dir}
    const short = await runCli(['serve'], {...base, API_TOKEN: 'tiny-secret'})
    expect(short.code).toBe(2)
    expect(short.stderr).toContain('API_TOKEN: must be at least 16 characters; generate one with: openssl rand -hex 32')
    expect(short.stderr).not.toContain('tiny-secret')

    const missing = await runCli(['serve'], base)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('API_TOKEN: is required')

    const both = await runCli(['serve'], {...base, API_TOKEN: TOKEN, BACKUP_INTERVAL: '12h', BACKUP_SCHEDULE: '0 3 * * *'})
    expect(both.code).toBe(2)
    expect(both.stderr).toMatch(/BACKUP_SCHEDULE: cannot be combined with BACKUP_INTERVAL/)
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('on SIGTERM stops accepting requests, lets the running backup finish, and exits 0 with the backup complete and listed', async () => {
    const unlock = await holdTableLock(cluster, 'shop', 'customers')
    const {child, result, dir, url, post, job, output} = await serve({SHUTDOWN_GRACE: '60s'})
    let released = false
    try {
      const {jobId} = await jsonOf(post())
      await waitFor(async () => ((await job(jobId)).status === 'running' ? true : undefined), 10_000, 'the backup to run')
      child.kill('SIGTERM')
      await waitFor(() => (output().includes('"event":"shutdown.started"') ? true : undefined), 10_000, 'shutdown to start')
      // From now on a request is refused: 503 on a connection still open, then no connection at all.
      await waitFor(
        () =>
          fetch(`${url}/api/v1/backups`, {headers: {Authorization: `Bearer ${TOKEN}`}}).then(
            (response) => expect(response.status).toBe(503) as undefined,
            () => true,
          ),
        10_000,
        'the listener to close',
      )
      await unlock()
      released = true
    } finally {
      if (!released) await unlock()
    }

    const {code, stderr} = await result
    expect(code).toBe(0)
    expect(stderr).toContain('"event":"shutdown.complete"')
    expect(stderr).not.toContain(TOKEN)
    expect(stderr).not.toContain(cluster.password)
    const listed = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: dir})).stdout)
    expect(listed).toHaveLength(1)
    expect(listed[0].triggeredBy).toBe('api')
    expect((await fs.readdir(dir)).sort()).toEqual([listed[0].id, `${listed[0].id}.meta.json`])
    await fs.rm(dir, {recursive: true, force: true})
  })

  // docker stop or a rolling update can come the moment the HTTP server answers, while the rest of
  // the service still starts: that SIGTERM must be a clean shutdown too (it was Node's default death
  // by the signal, exit 143, until the handlers were installed before start-up).
  it('a SIGTERM the moment it listens (start-up not finished) stops it cleanly: exit 0, shutdown complete', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = await tempDir('dbb-serve-e2e-')
      const child = startCli(['serve'], {
        ...cluster.dbbEnv('shop'),
        BACKUP_LOCAL_DIR: dir,
        API_TOKEN: TOKEN,
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
        BACKUP_SCHEDULE: '0 3 1 1 *',
      })
      const result = collect(child)
      let stderr = ''
      child.stderr?.on('data', (text: Buffer) => {
        const before = stderr
        stderr += text.toString()
        if (!before.includes('"event":"server.listening"') && stderr.includes('"event":"server.listening"')) child.kill('SIGTERM')
      })
      const {code, signal} = await result.then((done) => ({code: done.code, signal: child.signalCode}))
      expect([round, code, signal, stderr.includes('"event":"shutdown.complete"')]).toEqual([round, 0, null, true])
      await fs.rm(dir, {recursive: true, force: true})
    }
  }, 120_000)

  it('on SIGTERM aborts a backup that outlasts SHUTDOWN_GRACE, leaves nothing behind, and exits 0', async () => {
    const unlock = await holdTableLock(cluster, 'shop', 'customers')
    try {
      const {child, result, dir, post, job} = await serve({SHUTDOWN_GRACE: '1s'})
      const {jobId} = await jsonOf(post())
      await waitFor(async () => ((await job(jobId)).status === 'running' ? true : undefined), 10_000, 'the backup to run')
      const sent = Date.now()
      child.kill('SIGTERM')
      const {code, stderr} = await result
      expect(code).toBe(0)
      expect(Date.now() - sent).toBeLessThan(15_000)
      expect(stderr).toContain('"event":"shutdown.abort"')
      expect(stderr).toMatch(/"event":"job.finished","status":"failed"/)
      expect(await fs.readdir(dir)).toEqual([])
      const listed = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: dir})).stdout)
      expect(listed).toEqual([])
      await fs.rm(dir, {recursive: true, force: true})
    } finally {
      await unlock()
    }
  })

  // Issue 16 item 6: a wrong password used to start silently (only /health showed it).
  it('warns at start about each failed /health check (wrong password), keeps serving, and logs successful probes only at debug', async () => {
    const {child, result, dir, url, output} = await serve({DB_PASSWORD: 'wrong-password-for-sure'})
    try {
      const warning = await waitFor(
        () => output().split('\n').find((line) => line.includes('"event":"startup.check_failed"')),
        20_000,
        'the start-up check warning',
      )
      expect(JSON.parse(warning)).toMatchObject({level: 40, check: 'postgres', error: expect.stringMatching(/password authentication failed/)})
      expect(output()).not.toContain('wrong-password-for-sure')
      expect(output()).not.toMatch(/"check":"storage"/)
      const health = await fetch(`${url}/health`)
      expect(health.status).toBe(503)
      // Still serving: the database may come up (or the secret be fixed) later.
      expect((await fetch(`${url}/api/v1/backups`, {headers: {Authorization: `Bearer ${TOKEN}`}})).status).toBe(200)
      expect((await fetch(`${url}/metrics`)).status).toBe(200)
    } finally {
      child.kill('SIGTERM')
    }

    const {code, stderr} = await result
    expect(code).toBe(0)
    // A probe that succeeds is not logged at info (/metrics); a failing one (/health 503) is.
    const requests = stderr
      .split('\n')
      .filter((line) => line.includes('"event":"http.request"'))
      .map((line) => `${JSON.parse(line).path} ${JSON.parse(line).status}`)
    expect(requests).toEqual(['/health 503', '/api/v1/backups 200'])
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('refuses BACKUP_INTERVAL=1ms and a cron schedule firing every second with exit code 2, naming the variable', async () => {
    const dir = await tempDir()
    const base = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: dir, API_TOKEN: TOKEN}
    const interval = await runCli(['serve'], {...base, BACKUP_INTERVAL: '1ms'})
    expect(interval.code).toBe(2)
    expect(interval.stderr).toMatch(/BACKUP_INTERVAL: must be at least 1 minute .*\(example: BACKUP_INTERVAL=24h\)/)
    const cron = await runCli(['serve'], {...base, BACKUP_SCHEDULE: '* * * * * *'})
    expect(cron.code).toBe(2)
    expect(cron.stderr).toMatch(/BACKUP_SCHEDULE: fires more than once a minute/)
    expect(await fs.readdir(dir)).toEqual([])
    await fs.rm(dir, {recursive: true, force: true})
  })
})
