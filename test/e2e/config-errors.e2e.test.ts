import {runCli, tempDir} from '../helpers/cli'

/** Bad or missing configuration: exit 2, one line per problem naming the variable with an example, no stack trace. */
describe('configuration errors', () => {
  const errorLines = (stderr: string) => stderr.split('\n').filter((line) => line.startsWith('Error: '))

  it('reports every missing variable of backup run at once, including the backend’s', async () => {
    const result = await runCli(['backup', 'run'])
    expect(result.code).toBe(2)
    expect(errorLines(result.stderr)).toEqual([
      'Error: DB_HOST: is required (example: DB_HOST=db.internal)',
      'Error: DB_NAME: is required (example: DB_NAME=app)',
      'Error: BACKUP_LOCAL_DIR: is required with STORAGE_BACKEND=local (example: BACKUP_LOCAL_DIR=/var/backups/postgres)',
    ])
    expect(result.stderr).not.toMatch(/\n\s+at /)
  })

  it('names invalid values', async () => {
    const result = await runCli(['backup', 'run'], {
      DB_HOST: 'h',
      DB_NAME: 'd',
      DB_PORT: '99999',
      RETENTION_DAYS: 'a week',
      BACKUPS_TO_RETAIN: '0',
      LOG_FORMAT: 'yaml',
      BACKUP_LOCAL_DIR: '/tmp',
    })
    expect(result.code).toBe(2)
    expect(errorLines(result.stderr)).toEqual([
      'Error: LOG_FORMAT: must be json or plain (example: LOG_FORMAT=json)',
      'Error: DB_PORT: must be at most 65535 (example: DB_PORT=5432)',
      'Error: RETENTION_DAYS: must be a whole number from 0 to 36500 (example: RETENTION_DAYS=7)',
      'Error: BACKUPS_TO_RETAIN: must be at least 1 (example: BACKUPS_TO_RETAIN=14)',
    ])
  })

  it('flags override variables', async () => {
    const result = await runCli(['backup', 'run', '--db-port', 'x'], {DB_HOST: 'h', DB_NAME: 'd', DB_PORT: '5432', BACKUP_LOCAL_DIR: '/tmp'})
    expect(result.code).toBe(2)
    expect(errorLines(result.stderr)).toEqual(['Error: DB_PORT: must be a whole number from 1 to 65535 (example: DB_PORT=5432)'])
  })

  it('an unknown backend lists the installed ones', async () => {
    const result = await runCli(['backup', 'list'], {STORAGE_BACKEND: 'ftp'})
    expect(result.code).toBe(2)
    expect(errorLines(result.stderr)[0]).toMatch(/^Error: STORAGE_BACKEND: unknown storage backend "ftp"; installed: (\S+, )*local/)
  })

  it('backup list needs no database settings', async () => {
    const empty = await tempDir()
    const result = await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: empty})
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual([])
  })

  it('backup list of a missing directory fails instead of showing no backups', async () => {
    const result = await runCli(['backup', 'list'], {BACKUP_LOCAL_DIR: '/tmp/dbb-no-such-dir-for-list'})
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('Error: backup directory /tmp/dbb-no-such-dir-for-list does not exist (check BACKUP_LOCAL_DIR)')
  })

  it('--json reports config errors as JSON on stdout with the exit code', async () => {
    const result = await runCli(['backup', 'list', '--json'], {STORAGE_BACKEND: 'local'})
    expect(result.code).toBe(2)
    expect(JSON.parse(result.stdout)).toEqual({
      error: 'CONFIG_INVALID',
      message: 'BACKUP_LOCAL_DIR: is required with STORAGE_BACKEND=local (example: BACKUP_LOCAL_DIR=/var/backups/postgres)',
      exitCode: 2,
    })
    expect(result.stdout).toBe(`${JSON.stringify(JSON.parse(result.stdout), null, 2)}\n`)
  })

  it('a misspelt variable is not silently ignored: a warning names it and the setting it is close to, never its value', async () => {
    const dir = await tempDir()
    const result = await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: dir, DB_PASWORD: 'Typo-Secret-5d1e', RETENTION_DAY: '3', backup_name_prefix: 'x', BACKUP_LOCAL_DIRR: dir})
    expect(result.code).toBe(0)
    const warnings = result.stderr
      .split('\n')
      .filter((line) => line.includes('"event":"setting.misspelt"'))
      .map((line) => JSON.parse(line) as {variable: string; suggestion: string; msg: string})
    expect(warnings.map(({variable, suggestion}) => [variable, suggestion])).toEqual([
      ['BACKUP_LOCAL_DIRR', 'BACKUP_LOCAL_DIR'],
      ['DB_PASWORD', 'DB_PASSWORD'],
      ['RETENTION_DAY', 'RETENTION_DAYS'],
      ['backup_name_prefix', 'BACKUP_NAME_PREFIX'],
    ])
    expect(warnings[1].msg).toBe('DB_PASWORD is not a dbb setting and is ignored; did you mean DB_PASSWORD?')
    expect(result.stderr).not.toContain('Typo-Secret-5d1e')

    const exact = await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: dir, DB_PASSWORD_FILE: '', RETENTION_DAYS: '3'})
    expect(exact.stderr).not.toContain('setting.misspelt')
  })

  it('an unknown flag is a usage error (exit 2)', async () => {
    const result = await runCli(['backup', 'list', '--no-such-flag'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/Nonexistent flag: --no-such-flag/)
  })
})
