import {ChildProcess, spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, freePort, isRoot, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * Each failure ends with a clear message and exit code 1, leaves no listed (or any) partial
 * backup, and leaves the earlier backup untouched.
 */
describe('failed backups (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>
  let good: {id: string; sha256: string}

  const listed = async () =>
    JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout).map((b: {id: string}) => b.id)

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 20_000)
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir}
    const first = await runCli(['backup', 'run', '--json'], env)
    expect(first.code).toBe(0)
    good = JSON.parse(first.stdout).metadata
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  afterEach(async () => {
    // Nothing but the good backup (dump + sidecar) may remain after any failure.
    expect((await fs.readdir(backupDir)).sort()).toEqual([good.id, `${good.id}.meta.json`])
    expect(await listed()).toEqual([good.id])
    const download = await runCli(['backup', 'download', good.id, '-o', '-'], {BACKUP_LOCAL_DIR: backupDir})
    expect(download.code).toBe(0)
  })

  it('wrong password: exit 1 with the server’s message, password not echoed', async () => {
    const result = await runCli(['backup', 'run'], {...env, DB_PASSWORD: 'wrong-password-123'})
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/password authentication failed for user "postgres"/)
    expect(result.stderr).not.toContain('wrong-password-123')
    expect(result.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/) // no stack trace
  })

  it('unreachable host: exit 1 naming the address', async () => {
    const port = await freePort()
    const result = await runCli(['backup', 'run'], {...env, DB_PORT: String(port)})
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`cannot connect to PostgreSQL at 127.0.0.1:${port}`)
    expect(result.stderr).toMatch(/connection refused/)
  })

  it('missing database: exit 1 with the server’s message', async () => {
    const result = await runCli(['backup', 'run'], {...env, DB_NAME: 'no_such_db'})
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/database "no_such_db" does not exist/)
  })

  it('unwritable backup directory: exit 1 naming the directory', async () => {
    const readOnly = await tempDir()
    await fs.chmod(readOnly, 0o555)
    // root ignores permissions, so run dbb as the unprivileged postgres user when we are root.
    const args = ['backup', 'run']
    const result = isRoot
      ? await collect(
          spawn('runuser', ['-u', 'postgres', '--', process.execPath, require.resolve('../../bin/run.js'), ...args], {
            env: {PATH: process.env.PATH, LOG_FORMAT: 'json', ...env, BACKUP_LOCAL_DIR: readOnly},
            cwd: '/',
          }),
        )
      : await runCli(args, {...env, BACKUP_LOCAL_DIR: readOnly})
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`backup directory ${readOnly} is not writable: EACCES`)
    expect(await fs.readdir(readOnly)).toEqual([])
    await fs.rm(readOnly, {recursive: true, force: true})
  })

  it('missing backup directory: exit 1 telling to create it', async () => {
    const result = await runCli(['backup', 'run'], {...env, BACKUP_LOCAL_DIR: `${backupDir}-missing`})
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`backup directory ${backupDir}-missing does not exist`)
  })

  it('Ctrl-C mid-dump: pg_dump is stopped, the partial file removed, exit non-zero', async () => {
    // Hold a lock so pg_dump blocks mid-dump, deterministically, after the upload has started.
    const locker = spawn('psql', ['-X', '-q', '-c', 'BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);'], {
      env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password, PGDATABASE: 'shop'},
      stdio: 'ignore',
    })
    try {
      await waitFor(async () => (await cluster.psql(`SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'events'::regclass`, 'shop')) === '1')
      const child = startCli(['backup', 'run'], env)
      const done = collect(child)
      await waitFor(async () => (await fs.readdir(backupDir)).some((name) => name.endsWith('.partial')))
      await waitFor(async () => (await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)) === '1')
      // pg_dump is running now: its command line carries no secret (the password travels in its environment).
      const pgDumpPids = (await fs.readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')).trim().split(/\s+/)
      const commandLines = await Promise.all(pgDumpPids.map((pid) => fs.readFile(`/proc/${pid}/cmdline`, 'utf8')))
      expect(commandLines.join(' ')).toMatch(/pg_dump/)
      expect(commandLines.join(' ')).not.toContain(cluster.password)
      child.kill('SIGINT')
      const result = await done
      expect(result.code).not.toBe(0)
      expect(result.stderr).toMatch(/received SIGINT/)
      expect(result.stderr).toMatch(/backup interrupted/)
      await waitFor(async () => (await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb'`)) === '0')
    } finally {
      stop(locker)
    }
  })
})

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

function stop(child: ChildProcess) {
  if (child.exitCode === null) child.kill('SIGKILL')
}

