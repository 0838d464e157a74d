import * as fs from 'node:fs'
import * as path from 'node:path'

import {childEnvironment, runTool} from '../../src/backup/child-process'
import {majorVersion, requireClientForServer} from '../../src/db/client-version'
import {libpqEnvironment} from '../../src/db/connection'

const ROOT = path.resolve(__dirname, '..', '..')

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, {withFileTypes: true}).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === 'node_modules' || entry.name === 'dist' ? [] : sourceFiles(full)
    return /\.(ts|js|cjs|mjs)$/.test(entry.name) ? [full] : []
  })
}

describe('what child processes receive (issue 11, hole 5)', () => {
  const dbbEnvironment = {
    PATH: '/usr/bin:/bin',
    HOME: '/home/dbb',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    TZ: 'Europe/Berlin',
    DB_PASSWORD: 'db-secret',
    PGPASSWORD: 'pg-secret',
    API_TOKEN: 'api-secret',
    AWS_SECRET_ACCESS_KEY: 'aws-secret',
    AWS_SESSION_TOKEN: 'aws-session',
    SLACK_TOKEN: 'slack-secret',
    SLACK_WEBHOOK_URL: 'https://hooks.slack.com/secret',
    FLATFILE_SECRET: 'plugin-secret',
    NODE_OPTIONS: '--require /tmp/x.js',
  }

  it('a version probe or tar gets PATH, locale, time zone and home, nothing else', () => {
    expect(childEnvironment({}, dbbEnvironment)).toEqual({PATH: '/usr/bin:/bin', HOME: '/home/dbb', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', TZ: 'Europe/Berlin'})
  })

  it('a caller may add libpq and locale variables only', () => {
    expect(childEnvironment({PGHOST: 'db', LC_ALL: 'C'}, dbbEnvironment)).toMatchObject({PGHOST: 'db', LC_ALL: 'C'})
    expect(() => childEnvironment({API_TOKEN: 'x'}, dbbEnvironment)).toThrow(/refusing to pass API_TOKEN/)
    expect(() => childEnvironment({NODE_OPTIONS: 'x'}, dbbEnvironment)).toThrow(/refusing to pass NODE_OPTIONS/)
  })

  it('a program that connects gets the resolved password as PGPASSWORD and never PGPASSFILE', () => {
    const env = libpqEnvironment({host: 'db', port: 5432, database: 'app', user: 'app', password: 'resolved'})
    expect(env).toMatchObject({PGHOST: 'db', PGPORT: '5432', PGDATABASE: 'app', PGUSER: 'app', PGPASSWORD: 'resolved'})
    expect(env.PGPASSFILE).toBeUndefined()
  })

  it('runs connecting programs with --no-password, so nothing ever prompts', async () => {
    expect((await runTool('echo', ['dump'], {PGHOST: 'db'})).stdout).toBe('--no-password dump\n')
    expect((await runTool('echo', ['dump', '-w'], {PGHOST: 'db'})).stdout).toBe('dump -w\n')
    // A program that does not connect gets its arguments unchanged.
    expect((await runTool('echo', ['dump'], {})).stdout).toBe('dump\n')
  })

  it('no module but src/backup/child-process.ts may start programs', () => {
    const offenders = sourceFiles(path.join(ROOT, 'src'))
      .filter((file) => path.relative(ROOT, file) !== path.join('src', 'backup', 'child-process.ts'))
      .filter((file) => /(['"])(node:)?child_process\1/.test(fs.readFileSync(file, 'utf8')))
      .map((file) => path.relative(ROOT, file))
    expect(offenders).toEqual([])
  })
})

describe('client and server versions (issue 16, item 7)', () => {
  it('reads major versions old and new', () => {
    expect([majorVersion('15.18'), majorVersion('18beta1'), majorVersion('9.6.24'), majorVersion('17')]).toEqual([15, 18, 9.6, 17])
  })

  it('refuses a server newer than the client and says what to install', () => {
    expect(() => requireClientForServer('pg_dump', '17.6', '18.1')).toThrow(
      /server is version 18\.1 but pg_dump is 17\.6.*--build-arg PG_CLIENT_VERSION=18.*postgresql-client-18/,
    )
    expect(() => requireClientForServer('pg_dump', '17.6', '15.4')).not.toThrow()
    expect(() => requireClientForServer('pg_dump', '17.6', '9.6.24')).not.toThrow()
  })
})
