import {execFile, execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {BIN, ROOT, cliEnv, collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, isRoot, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {waitFor} from '../helpers/wal'

const DB_PASSWORD = 'Db-Settings-Secret-6b1f0e'
const PLUGIN_TOKEN = 'leaky-plugin-secret-2c7d9a41'

/**
 * Secret settings as operators deploy them (issue 11 hole 6, issue 16 item 1, issue 18 item 3),
 * against a real PostgreSQL with scram-sha-256 authentication: a third-party backend that leaks
 * its secret into logs and errors, `*_FILE` secrets, pgpass files as Docker and Kubernetes mount
 * them (0444/0644), no password at all, and a pg_dump older than the server.
 */
describe('secret settings, passwords and client versions (real PostgreSQL, scram)', () => {
  let cluster: PgCluster
  let work: string
  let storeDir: string
  let pluginEnv: Record<string, string>

  beforeAll(async () => {
    cluster = await startPostgres({password: DB_PASSWORD})
    await seedDatabase(cluster, 'shop', 500)
    work = await tempDir('dbb-secret-settings-')
    storeDir = path.join(work, 'store')
    await fs.mkdir(storeDir)
    pluginEnv = {XDG_DATA_HOME: path.join(work, 'data'), XDG_CACHE_HOME: path.join(work, 'cache'), XDG_CONFIG_HOME: path.join(work, 'config')}
    const link = await runCli(['plugins', 'link', '--no-install', path.join(ROOT, 'test', 'fixtures', 'dbb-storage-leaky')], pluginEnv)
    expect([link.code, link.stderr]).toEqual([0, expect.any(String)])
  }, 120_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(work, {recursive: true, force: true})
  })

  /** DB settings without any password: each test adds the source it is about. */
  const dbWithoutPassword = () => {
    const {DB_PASSWORD: _password, ...rest} = cluster.dbbEnv('shop')
    return {...rest, BACKUP_LOCAL_DIR: storeDir, HOME: path.join(work, 'empty-home')}
  }

  async function secretFile(name: string, content: string, mode: number): Promise<string> {
    const file = path.join(work, name)
    await fs.writeFile(file, content)
    await fs.chmod(file, mode)
    return file
  }

  it('a plugin’s secret setting never reaches stdout, stderr or a log line, even inside its own errors', async () => {
    const leaky = {...pluginEnv, ...cluster.dbbEnv('shop'), STORAGE_BACKEND: 'leaky', LEAKY_TOKEN: PLUGIN_TOKEN}
    const outputs: string[] = []
    const list = await runCli(['backup', 'list'], {...leaky, LEAKY_FAIL: '1', LOG_LEVEL: 'debug'})
    expect(list.code).toBe(1)
    expect(list.stderr).toContain('leaky store refused token [redacted] (HTTP 403)')
    const listJson = await runCli(['backup', 'list', '--json'], {...leaky, LEAKY_FAIL: '1'})
    expect(listJson.code).toBe(1)
    expect(JSON.parse(listJson.stdout).message).toContain('refused token [redacted]')
    const plain = await runCli(['backup', 'run'], {...leaky, LEAKY_FAIL: '1', LOG_FORMAT: 'plain'})
    expect(plain.code).toBe(1)
    const viaFile = await runCli(['backup', 'list'], {...leaky, LEAKY_TOKEN: undefined, LEAKY_TOKEN_FILE: await secretFile('leaky-token', `${PLUGIN_TOKEN}\n`, 0o444)})
    expect([viaFile.code, viaFile.stderr]).toEqual([0, expect.stringContaining('"LEAKY_TOKEN":"[redacted]"')])
    outputs.push(list.stdout, list.stderr, listJson.stdout, listJson.stderr, plain.stdout, plain.stderr, viaFile.stdout, viaFile.stderr)
    expect(list.stderr).toContain('leaky store opened with token [redacted]')
    for (const text of outputs) expect(text).not.toContain(PLUGIN_TOKEN)
  })

  it('DB_PASSWORD_FILE and API_TOKEN_FILE work; both X and X_FILE, or an unreadable file, exit 2 naming the variable', async () => {
    const passwordFile = await secretFile('db-password', `${DB_PASSWORD}\n`, 0o444)
    const run = await runCli(['backup', 'run', '--json'], {...dbWithoutPassword(), DB_PASSWORD_FILE: passwordFile})
    expect([run.code, run.stderr.slice(-300)]).toEqual([0, expect.any(String)])

    const both = await runCli(['backup', 'run'], {...dbWithoutPassword(), DB_PASSWORD: DB_PASSWORD, DB_PASSWORD_FILE: passwordFile})
    expect([both.code, both.stderr.split('\n')[0]]).toEqual([2, 'Error: DB_PASSWORD_FILE: is set together with DB_PASSWORD; set only one of them'])

    // dbb serve resolves its settings in the same place: the API answers the token from the file.
    const token = 'api-token-from-a-file-0123456789'
    const serve = startCli(['serve'], {
      ...dbWithoutPassword(),
      DB_PASSWORD_FILE: passwordFile,
      API_TOKEN_FILE: await secretFile('api-token', `${token}\n`, 0o444),
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      BACKUP_SCHEDULE: '0 3 1 1 *',
    })
    const served = collect(serve)
    let log = ''
    serve.stderr?.on('data', (text: Buffer) => (log += text.toString()))
    try {
      const url = await waitFor('dbb serve to listen', async () => /"event":"server.listening","url":"([^"]+)"/.exec(log)?.[1])
      expect((await fetch(`${url}/api/v1/backups`, {headers: {Authorization: `Bearer ${token}`}})).status).toBe(200)
      expect((await fetch(`${url}/api/v1/backups`, {headers: {Authorization: `Bearer ${token}-wrong`}})).status).toBe(401)
    } finally {
      serve.kill('SIGTERM')
    }

    expect((await served).code).toBe(0)
    expect(log).not.toContain(token)

    const missing = await runCli(['serve'], {...dbWithoutPassword(), API_TOKEN_FILE: path.join(work, 'no-such-token')})
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/Error: API_TOKEN_FILE: cannot read .*no-such-token as .*: no such file \(ENOENT\)/)
    for (const text of [run.stdout, run.stderr, both.stderr]) expect(text).not.toContain(DB_PASSWORD)
  })

  it('a pgpass secret mounted 0444 (Docker Swarm) or ~/.pgpass 0644 (Kubernetes) works for pg_dump too', async () => {
    const swarm = await secretFile('pgpass-0444', `127.0.0.1:${cluster.port}:*:postgres:${DB_PASSWORD}\n`, 0o444)
    const run = await runCli(['backup', 'run', '--json'], {...dbWithoutPassword(), PGPASSFILE: swarm})
    expect([run.code, run.stderr.slice(-400)]).toEqual([0, expect.any(String)])

    const home = path.join(work, 'home')
    await fs.mkdir(home, {recursive: true})
    await fs.writeFile(path.join(home, '.pgpass'), `*:*:shop:postgres:${DB_PASSWORD}\n`, {mode: 0o644})
    await fs.chmod(path.join(home, '.pgpass'), 0o644)
    const fromHome = await runCli(['backup', 'run', '--json'], {...dbWithoutPassword(), HOME: home})
    expect([fromHome.code, fromHome.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    for (const text of [run.stdout, run.stderr, fromHome.stdout, fromHome.stderr]) expect(text).not.toContain(DB_PASSWORD)
  })

  it('no password anywhere: says what was looked for and where, and the pgpass line format', async () => {
    const none = await runCli(['backup', 'run'], dbWithoutPassword())
    expect(none.code).toBe(1)
    expect(none.stderr).not.toContain('client password must be a string')
    for (const looked of ['DB_PASSWORD', 'PGPASSWORD', 'PGPASSFILE', '/run/secrets/pgpass', '.pgpass', 'hostname:port:database:username:password']) {
      expect([looked, none.stderr.includes(looked)]).toEqual([looked, true])
    }

    const noMatch = await secretFile('pgpass-other-user', `*:*:*:someone_else:${DB_PASSWORD}\n`, 0o600)
    const unmatched = await runCli(['backup', 'run'], {...dbWithoutPassword(), PGPASSFILE: noMatch})
    expect(unmatched.code).toBe(1)
    expect(unmatched.stderr).toContain(`no line of ${noMatch} matches 127.0.0.1:${cluster.port}:shop:postgres`)

    const directory = await runCli(['backup', 'run'], {...dbWithoutPassword(), PGPASSFILE: work})
    expect(directory.code).toBe(2)
    expect(directory.stderr).toMatch(new RegExp(`Error: PGPASSFILE: cannot read ${work} as (user \\S+ \\(uid \\d+\\)|uid \\d+): it is a directory`))
  })

  it('a pgpass file dbb cannot read (EACCES) is reported by name, user and cause, never skipped', async () => {
    const unreadable = await secretFile('pgpass-unreadable', `*:*:*:*:${DB_PASSWORD}\n`, isRoot ? 0o600 : 0o000)
    const env = cliEnv({...dbWithoutPassword(), PGPASSFILE: unreadable})
    // Root reads any file: as root, dbb runs as the postgres user, who does not own the 0600 file.
    const [file, args] = isRoot ? ['runuser', ['-u', 'postgres', '--', process.execPath, BIN, 'backup', 'run']] : [process.execPath, [BIN, 'backup', 'run']]
    await fs.chmod(work, 0o755)
    const result = await new Promise<{code: number | null; stderr: string}>((resolve) =>
      execFile(file, args, {env, cwd: ROOT}, (error, _stdout, stderr) => resolve({code: error ? (error as {code?: number}).code ?? null : 0, stderr})),
    )
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(new RegExp(`^Error: PGPASSFILE: cannot read ${unreadable} as (user \\S+ \\(uid \\d+\\)|uid \\d+): permission denied \\(EACCES\\)`))
  })

  it('a pg_dump older than the server: fails before anything is written, naming the client to install', async () => {
    const bin = path.join(work, 'old-client')
    await fs.mkdir(bin, {recursive: true})
    const real = execFileSync('sh', ['-c', 'command -v pg_dump'], {encoding: 'utf8'}).trim()
    const script = `#!/bin/sh\nif [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi\nexec ${real} "$@"\n`
    await fs.writeFile(path.join(bin, 'pg_dump'), script, {mode: 0o755})
    const before = await fs.readdir(storeDir)
    const old = await runCli(['backup', 'run'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: storeDir, PATH: `${bin}:${process.env.PATH}`})
    expect(old.code).toBe(1)
    expect(old.stderr).toMatch(/the PostgreSQL server is version \d+\.\d+ but pg_dump is 9\.6\.24/)
    expect(old.stderr).toMatch(/--build-arg PG_CLIENT_VERSION=\d+.*postgresql-client-\d+/)
    expect((await fs.readdir(storeDir)).sort()).toEqual(before.sort())
  })
})
