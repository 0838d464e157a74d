import {runCli} from '../helpers/cli'

/**
 * Exit codes and events as the README states them: bad settings exit 2, and with JSON logs a
 * failed run ends with a JSON `command.failed` event (a log pipeline sees failures that happen
 * before any operation started), after the plain `Error:` lines a person reads.
 */
describe('failures as exit codes and events', () => {
  const lastLine = (text: string) => text.trimEnd().split('\n').at(-1) ?? ''

  it('a missing BACKUP_LOCAL_DIR exits 2 and ends with a command.failed JSON event naming it', async () => {
    const result = await runCli(['backup', 'list'], {LOG_FORMAT: 'json'})
    expect(result.code).toBe(2)
    expect(result.stderr.split('\n')[0]).toBe('Error: BACKUP_LOCAL_DIR: is required with STORAGE_BACKEND=local (example: BACKUP_LOCAL_DIR=/var/backups/postgres)')
    const event = JSON.parse(lastLine(result.stderr))
    expect(event).toMatchObject({
      level: 50,
      event: 'command.failed',
      command: 'backup list',
      error: 'CONFIG_INVALID',
      exitCode: 2,
      issues: [{variable: 'BACKUP_LOCAL_DIR', message: 'is required with STORAGE_BACKEND=local', example: '/var/backups/postgres'}],
    })
  })

  it('an unknown flag is a usage error with the same closing event', async () => {
    const result = await runCli(['prune', '--bogus'], {LOG_FORMAT: 'json'})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/^Error: Nonexistent flag: --bogus\n/)
    expect(JSON.parse(lastLine(result.stderr))).toMatchObject({event: 'command.failed', command: 'prune', error: 'USAGE', exitCode: 2})
  })

  it('plain logs get the Error: lines only', async () => {
    const result = await runCli(['backup', 'list'], {LOG_FORMAT: 'plain'})
    expect(result.code).toBe(2)
    expect(result.stderr).toBe('Error: BACKUP_LOCAL_DIR: is required with STORAGE_BACKEND=local (example: BACKUP_LOCAL_DIR=/var/backups/postgres)\n')
  })

  it('STORAGE_BACKEND=S3 selects s3: one message, about the s3 setting that is missing', async () => {
    const result = await runCli(['backup', 'list'], {LOG_FORMAT: 'plain', STORAGE_BACKEND: 'S3'})
    expect(result.code).toBe(2)
    expect(result.stderr).toBe('Error: S3_BUCKET: is required with STORAGE_BACKEND=s3 (example: S3_BUCKET=my-db-backups)\n')
  })
})
