import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {parseWalRange, pgBasebackupArgs} from '../../src/backup/base-backup'
import {UsageError} from '../../src/errors'
import {bootedAt} from '../../src/process-alive'
import {parseRecoveryTarget, parseTargetTimeline} from '../../src/restore/base'
import {checkDataDirectory, walForegroundFetchCommand, writeRecoveryConfig} from '../../src/restore/recovery-config'

describe('recovery targets', () => {
  it('accepts a timestamp with a zone and passes PostgreSQL the text as given', () => {
    const target = parseRecoveryTarget({time: '2026-11-21 14:30:00.123456+00'})
    expect(target).toMatchObject({kind: 'time', value: '2026-11-21 14:30:00.123456+00'})
    expect(target?.kind === 'time' && target.at.toISOString()).toBe('2026-11-21T14:30:00.123Z')
    expect(parseRecoveryTarget({time: '2026-11-21T16:30:00+02:00'})).toMatchObject({kind: 'time', at: new Date('2026-11-21T14:30:00Z')})
    expect(parseRecoveryTarget({time: '2026-11-21T14:30Z'})).toMatchObject({kind: 'time', at: new Date('2026-11-21T14:30:00Z')})
  })

  it('refuses ambiguous or malformed targets with an example, and more than one target', () => {
    expect(() => parseRecoveryTarget({time: '2026-11-21 14:30'})).toThrow(/time zone \(example: --target-time/)
    expect(() => parseRecoveryTarget({time: "2026-11-21 14:30+00'; DROP"})).toThrow(UsageError)
    expect(() => parseRecoveryTarget({lsn: '3000060'})).toThrow(/--target-lsn: .* \(example: --target-lsn 0\/3000060\)/)
    expect(() => parseRecoveryTarget({name: "it's"})).toThrow(/--target-name/)
    expect(() => parseRecoveryTarget({time: '2026-11-21 14:30+00', lsn: '0/3000060'})).toThrow(/choose one of/)
    expect(parseRecoveryTarget({lsn: '0/3a00060'})).toEqual({kind: 'lsn', value: '0/3A00060'})
    expect(parseRecoveryTarget({})).toBeUndefined()
  })
})

describe('pg_basebackup', () => {
  it('streams tar to stdout with the configured WAL method and no secrets in its arguments', () => {
    expect(pgBasebackupArgs({walMethod: 'fetch', checkpoint: 'fast'}, 'dbb x')).toEqual([
      '-D', '-', '--format=tar', '--wal-method=fetch', '--checkpoint=fast', '--label=dbb x', '--no-password', '--verbose',
    ])
  })

  it('reads the WAL range from its verbose output', () => {
    const stderr = [
      'pg_basebackup: initiating base backup, waiting for checkpoint to complete',
      'pg_basebackup: checkpoint completed',
      'pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1',
      'pg_basebackup: write-ahead log end point: 0/2000100',
      'pg_basebackup: base backup completed',
    ].join('\n')
    expect(parseWalRange(stderr)).toEqual({startLsn: '0/2000028', timeline: 1, stopLsn: '0/2000100'})
    expect(parseWalRange('pg_basebackup: error: connection failed')).toBeUndefined()
  })
})

describe('the restored data directory', () => {
  let dir: string
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-pitr-unit-'))
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('writes recovery.signal and the settings, commenting out recovery settings an earlier restore left in the backup', async () => {
    await fs.writeFile(path.join(dir, 'PG_VERSION'), '15\n')
    await fs.writeFile(path.join(dir, 'postgresql.auto.conf'), "work_mem = '8MB'\nrestore_command = 'old'\nrecovery_target_time = '2020-01-01 00:00+00'\n")
    const restoreCommand = walForegroundFetchCommand('/usr/bin/node', '/opt/dbb/bin/dbb-wal', ['--storage', 'local', '--local-dir', "/srv/it's backups"])
    expect(restoreCommand).toBe(`set -- fetch --storage local --local-dir '/srv/it'\\''s backups' %f %p; DBB_NODE=/usr/bin/node; DBB_WAL=/opt/dbb/bin/dbb-wal; command . /opt/dbb/bin/dbb-wal; exit 200`)
    await writeRecoveryConfig(dir, {restoreCommand, target: {kind: 'lsn', value: '0/3000060'}, archiving: 'inherited', backupId: 'backup_20261121T030000Z.tar.gz'})

    expect(await fs.readFile(path.join(dir, 'recovery.signal'), 'utf8')).toBe('')
    const conf = await fs.readFile(path.join(dir, 'postgresql.auto.conf'), 'utf8')
    expect(conf).toContain("work_mem = '8MB'\n")
    expect(conf).toContain("# replaced by dbb restore: restore_command = 'old'")
    expect(conf).toContain("# replaced by dbb restore: recovery_target_time = '2020-01-01 00:00+00'")
    const active = conf.split('\n').filter((line) => /^(restore_command|recovery_target)/.test(line))
    expect(active).toEqual([
      `restore_command = 'set -- fetch --storage local --local-dir ''/srv/it''\\''''s backups'' %f %p; DBB_NODE=/usr/bin/node; DBB_WAL=/opt/dbb/bin/dbb-wal; command . /opt/dbb/bin/dbb-wal; exit 200'`,
      "recovery_target_lsn = '0/3000060'",
      "recovery_target_action = 'promote'",
    ])
  })

  it('turns archiving off by default (marked, so a later restore with --archive undoes only its own line) and writes the target timeline', async () => {
    await fs.writeFile(path.join(dir, 'PG_VERSION'), '15\n')
    await fs.writeFile(path.join(dir, 'postgresql.auto.conf'), "archive_command = 'set by ALTER SYSTEM'\n")
    await writeRecoveryConfig(dir, {restoreCommand: 'x', targetTimeline: 'current', archiving: 'off', backupId: 'b1'})
    const drill = await fs.readFile(path.join(dir, 'postgresql.auto.conf'), 'utf8')
    expect(drill.split('\n').filter((line) => /^(archive_|recovery_target_timeline)/.test(line))).toEqual([
      "archive_command = 'set by ALTER SYSTEM'",
      "recovery_target_timeline = 'current'",
      "archive_mode = 'off'  # dbb restore: a restored cluster does not archive unless restored with --archive",
    ])

    // A base backup taken of that drill cluster, restored for real with --archive: the operator's archive settings apply again.
    await writeRecoveryConfig(dir, {restoreCommand: 'x', archiving: 'inherited', backupId: 'b2'})
    const disasterRecovery = await fs.readFile(path.join(dir, 'postgresql.auto.conf'), 'utf8')
    expect(disasterRecovery.split('\n').filter((line) => /^(archive_|recovery_target_timeline)/.test(line))).toEqual(["archive_command = 'set by ALTER SYSTEM'"])
  })

  it.each([
    ['latest', 'latest'],
    ['current', 'current'],
    [' Current ', 'current'],
    ['2', '2'],
    ['4294967295', '4294967295'],
  ])('--target-timeline %j is %j', (text, expected) => {
    expect(parseTargetTimeline(text)).toBe(expected)
  })

  it.each(['0', '-1', 'newest', '0x2', '4294967296', '1.5', ''])('--target-timeline %j is refused (exit 2)', (text) => {
    expect(() => parseTargetTimeline(text)).toThrow(expect.objectContaining({exitCode: 2, message: expect.stringMatching(/--target-timeline: .* is not a timeline/)}))
  })

  it('refuses PostgreSQL before 12, a non-empty directory without --force, and a directory a live postmaster owns', async () => {
    await fs.writeFile(path.join(dir, 'PG_VERSION'), '11\n')
    await expect(writeRecoveryConfig(dir, {restoreCommand: 'x', archiving: 'off', backupId: 'b'})).rejects.toThrow(/PostgreSQL 12 or newer/)
    await expect(checkDataDirectory(dir, {force: false})).rejects.toThrow(/is not empty .* --force/)
    await expect(checkDataDirectory(dir, {force: true})).resolves.toBeUndefined()
    await fs.writeFile(path.join(dir, 'postmaster.pid'), `${process.pid}\n${dir}\n`)
    await expect(checkDataDirectory(dir, {force: true})).rejects.toThrow(/PostgreSQL is running on .* \(postmaster pid \d+\)/)
    await expect(checkDataDirectory(path.join(dir, 'missing'), {force: false})).resolves.toBeUndefined()
  })

  it('a postmaster.pid whose pid runs nowhere here is refused too (the server may run in another pid namespace), unless its server started before this boot', async () => {
    const file = path.join(dir, 'postmaster.pid')
    const noSuchPid = 4_194_305 // above Linux's pid_max limit
    const now = Math.floor(Date.now() / 1000)
    await fs.writeFile(file, `${noSuchPid}\n${dir}\n${now}\n5432\n/run/postgresql\n*\n  5432001      3\nready   \n`)
    await expect(checkDataDirectory(dir, {force: true})).rejects.toThrow(
      expect.objectContaining({
        exitCode: 2,
        message: expect.stringMatching(/postmaster\.pid stands \(postmaster pid 4194305, started .*\) and no such process runs here, .* another container or pid namespace .*: stop it there first\. If no server runs on it .* remove .*postmaster\.pid and run the restore again/),
      }),
    )
    // Without a readable start time nothing proves it stale either.
    await fs.writeFile(file, `${noSuchPid}\n`)
    await expect(checkDataDirectory(dir, {force: true})).rejects.toThrow(/no such process runs here/)
    // Written before this machine booted: that server cannot be running.
    await fs.writeFile(file, `${noSuchPid}\n${dir}\n${Math.floor(bootedAt()! / 1000) - 60}\n5432\n`)
    await expect(checkDataDirectory(dir, {force: true})).resolves.toBeUndefined()
    await fs.rm(file)
    await expect(checkDataDirectory(dir, {force: true})).resolves.toBeUndefined()
  })
})
