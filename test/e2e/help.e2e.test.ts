import {runCli, tempDir} from '../helpers/cli'

/** What a newcomer types first: help, help for a command, a typo, the plugin list, a storage command's flags. */
describe('help and suggestions', () => {
  const commandLines = (stdout: string) => stdout.slice(stdout.indexOf('COMMANDS')).split('\n')

  it('dbb help lists every command once, plugins included, and offers autocomplete', async () => {
    const result = await runCli(['help'])
    expect(result.code).toBe(0)
    for (const command of ['autocomplete', 'backends', 'check', 'help', 'plugins', 'prune', 'restore', 'serve']) {
      expect(commandLines(result.stdout).filter((line) => line.startsWith(`  ${command} `))).toHaveLength(1)
    }
    expect(result.stdout.split('\n').filter((line) => /^ {2}plugins\b/.test(line))).toHaveLength(1)
    expect(result.stdout).toMatch(/^ {2}backup +Take, list and download backups/m)
  })

  it('dbb help serve shows the serve command, not "command not found"', async () => {
    const result = await runCli(['help', 'serve'])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('Run the sidecar: REST API, scheduled backups')
    expect(result.stdout).toContain('$ dbb serve')
    expect(result.stderr).not.toContain('help:serve')
  })

  it('dbb help with a typo names the closest command’s help and exits 2, as a typo of the command does', async () => {
    const serv = await runCli(['help', 'serv'])
    expect(serv.code).toBe(2)
    expect(serv.stderr).toBe('Error: "serv" is not a dbb command. Did you mean "dbb help serve"?\nRun "dbb help" for the list of commands.\n')
    expect(serv.stdout).toBe('')

    const twoWords = await runCli(['help', 'bakup', 'run'])
    expect(twoWords.code).toBe(2)
    expect(twoWords.stderr).toContain('Did you mean "dbb help backup run"?')

    const nonsense = await runCli(['help', 'frobnicate'])
    expect(nonsense.code).toBe(2)
    expect(nonsense.stderr).toBe('Error: "frobnicate" is not a dbb command.\nRun "dbb help" for the list of commands.\n')
  })

  it('a typo names the closest command and exits 2 without running anything', async () => {
    const typo = await runCli(['bakup', 'run'])
    expect(typo.code).toBe(2)
    expect(typo.stderr).toBe('Error: "bakup run" is not a dbb command. Did you mean "dbb backup run"?\nRun "dbb help" for the list of commands.\n')

    const restore = await runCli(['restor', 'latest'])
    expect(restore.code).toBe(2)
    expect(restore.stderr).toContain('Did you mean "dbb restore"?')

    const nonsense = await runCli(['frobnicate'])
    expect(nonsense.code).toBe(2)
    expect(nonsense.stderr).toBe('Error: "frobnicate" is not a dbb command.\nRun "dbb help" for the list of commands.\n')
  })

  it('help texts say what each command does: restore’s --db-name, backup run’s two types', async () => {
    const restore = await runCli(['restore', '--help'])
    expect(restore.code).toBe(0)
    expect(restore.stdout).not.toContain('Database to back up')
    expect(restore.stdout).toMatch(/--db-name=app +\[env: DB_NAME\] Database to restore into, replacing it\s+\(unless --target-db\)/)

    const backup = await runCli(['backup', 'run', '--help'])
    expect(backup.stdout.split('\n')[0]).toMatch(/logical .*--type base/)
    expect(backup.stdout).toMatch(/--db-name=app +\[env: DB_NAME\] Database to back up/)
  })

  it('the help of a storage command lists the selected backend’s flags and points to dbb backends', async () => {
    const local = await runCli(['backup', 'list', '--help'])
    expect(local.code).toBe(0)
    expect(local.stdout).toContain('STORAGE FLAGS (backend "local", from STORAGE_BACKEND (default); every backend: dbb backends)')
    expect(local.stdout).toMatch(/--local-dir=\/var\/backups\/postgres +Directory that holds the backups.*\(env: BACKUP_LOCAL_DIR\)/)

    const s3 = await runCli(['prune', '--help'], {STORAGE_BACKEND: 'S3'})
    expect(s3.stdout).toContain('STORAGE FLAGS (backend "s3", from STORAGE_BACKEND; every backend: dbb backends)')
    expect(s3.stdout).toMatch(/--s3-bucket=\S+ +.*\(env: S3_BUCKET\)/)
    expect(s3.stdout).toMatch(/--aws-secret-access-key=<secret> /)

    const none = await runCli(['backends', '--help'])
    expect(none.stdout).not.toContain('STORAGE FLAGS')
  })

  it('dbb plugins lists the built-in storage backends instead of "No plugins installed"', async () => {
    const result = await runCli(['plugins'], {XDG_DATA_HOME: await tempDir()})
    expect(result.code).toBe(0)
    expect(result.stdout).not.toContain('No plugins installed')
    expect(result.stdout).toMatch(/^@dbb\/storage-local +\S+ +built in +local *$/m)
    expect(result.stdout).toMatch(/^@dbb\/storage-s3 +\S+ +built in +s3 *$/m)
  })

  it('dbb autocomplete prints the set-up for the shell', async () => {
    const result = await runCli(['autocomplete', 'bash'], {XDG_CACHE_HOME: await tempDir()})
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('dbb autocomplete')
    expect(result.stdout).toMatch(/bashrc/)
  })
})
