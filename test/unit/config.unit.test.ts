import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {loadConfig} from '../../src/config'
import {ConfigError} from '../../src/errors'

function issuesOf(run: () => unknown): string[] {
  try {
    run()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as ConfigError).message.split('\n')
  }

  throw new Error('expected a ConfigError')
}

const validDatabase = {DB_HOST: 'db', DB_NAME: 'app'}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig(['database', 'namePrefix', 'retention', 'storageBackend', 'logging'], validDatabase, {})
    expect(config).toEqual({
      database: {host: 'db', port: 5432, database: 'app', user: 'postgres', password: undefined, passfile: undefined},
      namePrefix: 'backup',
      retention: {retentionDays: 7, backupsToRetain: undefined, orphanGraceMs: 24 * 3600 * 1000},
      storageBackend: 'local',
      logging: {format: undefined, level: 'info'},
    })
    expect(Object.isFrozen(config)).toBe(true)
  })

  it('names each missing required variable with an example, one line each', () => {
    expect(issuesOf(() => loadConfig(['database'], {}, {}))).toEqual([
      'DB_HOST: is required (example: DB_HOST=db.internal)',
      'DB_NAME: is required (example: DB_NAME=app)',
    ])
  })

  it.each([
    ['DB_PORT', 'abc', 'DB_PORT: must be a whole number from 1 to 65535 (example: DB_PORT=5432)'],
    ['DB_PORT', '70000', 'DB_PORT: must be at most 65535 (example: DB_PORT=5432)'],
    ['DB_PORT', '0', 'DB_PORT: must be at least 1 (example: DB_PORT=5432)'],
    ['DB_NAME', 'x'.repeat(64), 'DB_NAME: must be at most 63 characters (the PostgreSQL identifier limit) (example: DB_NAME=app)'],
  ])('%s=%s is rejected with a message naming it', (variable, value, message) => {
    expect(issuesOf(() => loadConfig(['database'], {...validDatabase, [variable]: value}, {}))).toEqual([message])
  })

  it.each([
    ['RETENTION_DAYS', '-1', /^RETENTION_DAYS: must be a whole number from 0 to 36500 \(example: RETENTION_DAYS=7\)$/],
    ['RETENTION_DAYS', 'seven', /^RETENTION_DAYS: must be a whole number/],
    ['BACKUPS_TO_RETAIN', '0', /^BACKUPS_TO_RETAIN: must be at least 1 \(example: BACKUPS_TO_RETAIN=14\)$/],
    ['ORPHAN_GRACE', 'soon', /^ORPHAN_GRACE: "soon" is not a duration \(use e\.g\. 24h, 30m, PT24H, P1D\) \(example: ORPHAN_GRACE=24h\)$/],
    ['ORPHAN_GRACE', '30', /^ORPHAN_GRACE: "30" is not a duration/],
  ])('%s=%s is rejected', (variable, value, pattern) => {
    const [line] = issuesOf(() => loadConfig(['retention'], {[variable]: value}, {}))
    expect(line).toMatch(pattern)
  })

  it('accepts ms shorthand and ISO-8601 durations', () => {
    expect(loadConfig(['retention'], {ORPHAN_GRACE: '30m'}, {}).retention.orphanGraceMs).toBe(30 * 60_000)
    expect(loadConfig(['retention'], {ORPHAN_GRACE: 'PT6H'}, {}).retention.orphanGraceMs).toBe(6 * 3_600_000)
    expect(loadConfig(['retention'], {ORPHAN_GRACE: 'P1D'}, {}).retention.orphanGraceMs).toBe(86_400_000)
  })

  it('rejects prefixes that would break ids or paths', () => {
    for (const prefix of ['../x', 'a/b', '-x', 'a b', 'x'.repeat(65)]) {
      expect(issuesOf(() => loadConfig(['namePrefix'], {BACKUP_NAME_PREFIX: prefix}, {}))[0]).toMatch(/^BACKUP_NAME_PREFIX: must start with a letter/)
    }
  })

  it('rejects unknown log formats and levels', () => {
    expect(issuesOf(() => loadConfig(['logging'], {LOG_FORMAT: 'xml', LOG_LEVEL: 'loud'}, {}))).toEqual([
      'LOG_FORMAT: must be json or plain (example: LOG_FORMAT=json)',
      'LOG_LEVEL: must be one of trace, debug, info, warn, error, fatal, silent (example: LOG_LEVEL=info)',
    ])
  })

  it('treats blank values as unset', () => {
    expect(issuesOf(() => loadConfig(['database'], {DB_HOST: '  ', DB_NAME: 'app'}, {}))).toEqual([
      'DB_HOST: is required (example: DB_HOST=db.internal)',
    ])
  })

  describe('password sources', () => {
    it('prefers DB_PASSWORD, then PGPASSWORD', () => {
      expect(loadConfig(['database'], {...validDatabase, DB_PASSWORD: 'a'}, {PGPASSWORD: 'b'}).database.password).toBe('a')
      expect(loadConfig(['database'], validDatabase, {PGPASSWORD: 'b'}).database.password).toBe('b')
    })

    it('falls back to PGPASSFILE when no password is set', () => {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-pgpass-')), 'pgpass')
      fs.writeFileSync(file, '*:*:*:*:secret\n', {mode: 0o444})
      const {database} = loadConfig(['database'], validDatabase, {PGPASSFILE: file})
      expect(database.password).toBeUndefined()
      expect(database.passfile).toBe(file)
    })

    it('falls back to ~/.pgpass, as libpq does', () => {
      const home = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-home-'))
      fs.writeFileSync(path.join(home, '.pgpass'), '*:*:*:*:secret\n', {mode: 0o600})
      expect(loadConfig(['database'], validDatabase, {HOME: home}).database.passfile).toBe(path.join(home, '.pgpass'))
    })

    it('reports a PGPASSFILE that does not exist or cannot be read, by name, user and cause', () => {
      expect(issuesOf(() => loadConfig(['database'], validDatabase, {PGPASSFILE: '/nonexistent/pgpass'}))).toEqual([
        expect.stringMatching(/^PGPASSFILE: cannot read \/nonexistent\/pgpass as (user \S+ \(uid \d+\)|uid \d+): no such file \(ENOENT\)$/),
      ])
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-pgpass-'))
      expect(issuesOf(() => loadConfig(['database'], validDatabase, {PGPASSFILE: dir}))[0]).toMatch(/^PGPASSFILE: cannot read .*: /)
    })

    it('never puts a password into an error message', () => {
      const [line] = issuesOf(() => loadConfig(['database'], {DB_PASSWORD: 'hunter2-secret', DB_NAME: 'app'}, {}))
      expect(line).not.toContain('hunter2-secret')
    })
  })
})
