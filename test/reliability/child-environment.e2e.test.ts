import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {waitFor} from '../helpers/wal'

/** Distinctive values, so a leak is found by a plain substring search. */
const DB_PASSWORD = 'Db-Child-Secret-81c4e2'
const OTHER_SECRETS = {
  API_TOKEN: 'api-child-secret-3f9a7b5c1d2e4f60',
  AWS_SECRET_ACCESS_KEY: 'aws-child-secret-7e6d5c4b3a29',
  AWS_SESSION_TOKEN: 'aws-session-child-secret-1a2b3c',
  SLACK_TOKEN: 'xoxb-child-secret-9f8e7d',
  SLACK_WEBHOOK_URL: 'https://hooks.slack.example/child-secret-5566',
  // A third-party storage plugin's secret setting: dbb's child rule does not depend on its name.
  VAULTSTORE_SECRET_KEY: 'vaultstore-child-secret-4455',
}
const PROGRAMS = ['pg_dump', 'psql', 'pg_basebackup', 'pg_receivewal', 'tar']

interface Recorded {
  program: string
  argv: string
  env: Record<string, string>
  text: string
}

/**
 * Issue 11, hole 5: every program dbb starts — pg_dump, psql, pg_basebackup, pg_receivewal, tar
 * and their `--version` probes — runs through a wrapper first on PATH that records its argv and
 * environment, then execs the real program. dbb runs with its secrets in the environment; no child
 * may see any of them, and the database password only as PGPASSWORD of a program that connects.
 */
describe('what child processes receive (real PostgreSQL, every command path)', () => {
  let cluster: PgCluster
  let wrappers: string
  let records: string
  let storeDir: string
  let work: string

  beforeAll(async () => {
    cluster = await startPostgres({password: DB_PASSWORD, settings: {archive_mode: 'off'}})
    await seedDatabase(cluster, 'shop', 2000)
    work = await tempDir('dbb-child-env-')
    wrappers = path.join(work, 'bin')
    records = path.join(work, 'records')
    storeDir = path.join(work, 'store')
    await Promise.all([fs.mkdir(wrappers), fs.mkdir(records), fs.mkdir(storeDir)])
    for (const program of PROGRAMS) {
      const real = execFileSync('sh', ['-c', `command -v ${program}`], {encoding: 'utf8'}).trim()
      const script = `#!/bin/sh\nf=$(mktemp ${records}/${program}.XXXXXX)\n{ echo "argv: $*"; env; } > "$f"\nexec ${real} "$@"\n`
      await fs.writeFile(path.join(wrappers, program), script, {mode: 0o755})
    }
  }, 120_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(work, {recursive: true, force: true})
  })

  const env = () => ({...cluster.dbbEnv('shop'), ...OTHER_SECRETS, PATH: `${wrappers}:${process.env.PATH}`, BACKUP_LOCAL_DIR: storeDir})

  async function recorded(): Promise<Recorded[]> {
    const files = await fs.readdir(records)
    return Promise.all(
      files.map(async (file) => {
        const text = await fs.readFile(path.join(records, file), 'utf8')
        const [first, ...lines] = text.split('\n')
        const variables = Object.fromEntries(lines.filter((line) => line.includes('=')).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
        return {program: file.split('.')[0], argv: first.replace(/^argv: /, ''), env: variables, text}
      }),
    )
  }

  it('backup, restore, base backup, base restore, WAL streaming and every version probe: no secret reaches a child', async () => {
    const backup = await runCli(['backup', 'run'], env())
    expect([backup.code, backup.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    const restore = await runCli(['restore', 'latest', '--target-db', 'shop_copy', '--force'], env())
    expect([restore.code, restore.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    expect(await cluster.psql('SELECT count(*) FROM events', 'shop_copy')).toBe('2000')
    const base = await runCli(['backup', 'run', '--type', 'base'], env())
    expect([base.code, base.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    const pgdata = path.join(work, 'restored-pgdata')
    const baseRestore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', pgdata], env())
    expect([baseRestore.code, baseRestore.stderr.slice(-400)]).toEqual([0, expect.any(String)])

    const serve = startCli(['serve'], {
      ...env(),
      HTTP_PORT: '0',
      HTTP_HOST: '127.0.0.1',
      BACKUP_INTERVAL: '7d',
      WAL_STREAMING: 'true',
      WAL_STREAMING_SLOT: 'dbb_child_env',
      WAL_STREAMING_DIR: path.join(work, 'spool'),
    })
    const served = collect(serve)
    let serveLog = ''
    serve.stderr?.on('data', (text: Buffer) => (serveLog += text.toString()))
    try {
      // SIGTERM only once serve handles it (it starts streaming before it listens).
      await waitFor('dbb serve to listen', async () => (serveLog.includes('"event":"server.listening"') ? true : undefined))
      await waitFor('pg_receivewal streaming', async () => ((await recorded()).some((record) => record.program === 'pg_receivewal' && record.argv.includes('--no-loop')) ? true : undefined))
    } finally {
      serve.kill('SIGTERM')
    }

    const servedResult = await served
    expect([servedResult.code, servedResult.stderr.slice(-1500)]).toEqual([0, expect.any(String)])

    const all = await recorded()
    const seen = new Set(all.map((record) => `${record.program}${record.argv.includes('--version') ? ' --version' : ''}`))
    expect([...seen].sort()).toEqual(
      expect.arrayContaining(['pg_basebackup', 'pg_basebackup --version', 'pg_dump', 'pg_dump --version', 'pg_receivewal', 'psql', 'psql --version', 'tar']),
    )
    for (const record of all) {
      const where = `${record.program} ${record.argv}`
      for (const [name, secret] of Object.entries(OTHER_SECRETS)) expect([where, name, record.text.includes(secret)]).toEqual([where, name, false])
      expect(Object.keys(record.env).filter((name) => OTHER_SECRETS[name as keyof typeof OTHER_SECRETS] !== undefined || name.startsWith('DB_'))).toEqual([])
      expect([where, record.argv.includes(DB_PASSWORD)]).toEqual([where, false])
      const connects = record.program !== 'tar' && !record.argv.includes('--version')
      if (connects) {
        // The password dbb resolved, in this child's environment only; never a prompt.
        expect([where, record.env.PGPASSWORD]).toEqual([where, DB_PASSWORD])
        expect([where, record.argv.includes('--no-password')]).toEqual([where, true])
      } else {
        expect([where, record.text.includes(DB_PASSWORD), Object.keys(record.env).filter((name) => name.startsWith('PG'))]).toEqual([where, false, []])
      }
    }
  })
})
