import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {compactUtc} from '../../src/backup/naming'
import {EXIT_DRILL_FAILED} from '../../src/errors'
import {writeCraftedBackup} from '../helpers/crafted-backup'
import {runCli, tempDir} from '../helpers/cli'
import {segmentName, writeSourceSegment} from '../helpers/crash-invariants'
import {startReceiver} from '../helpers/notify-receivers'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * The exit-code contract of every command (README, "Exit codes"), one row per documented code:
 * cron, CI, Kubernetes Jobs and PostgreSQL's archive_command/restore_command act on these numbers,
 * so each is tested end to end through the built CLI. `wal fetch` is PostgreSQL's restore_command:
 * 1 only for "not in the archive", every other failure above 125 (those rows are the separate
 * "restore_command contract" test: they fail until the wal-fetch exit-code fix of issue 11 is merged).
 */
type Expected = number | '>125'

interface Row {
  command: string
  situation: string
  args: () => string[]
  env: () => Record<string, string>
  expected: Expected
}

describe('exit-code contract (README, "Exit codes")', () => {
  let cluster: PgCluster
  let dir: string
  let work: string
  let backupId: string
  let segment: {name: string; file: string}
  let conflicting: string
  let receiver: Awaited<ReturnType<typeof startReceiver>>
  let closedUrl: string
  let unrestorable: string

  const storage = () => ({BACKUP_LOCAL_DIR: dir})
  const db = () => ({...cluster.dbbEnv('shop'), ...storage()})
  const missing = () => ({BACKUP_LOCAL_DIR: path.join(work, 'not-mounted')})
  const freshChecks = () => ({...storage(), CHECK_BASE_BACKUP: 'false', CHECK_WAL: 'false'})

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 500)
    dir = await tempDir('dbb-exit-codes-')
    work = await tempDir('dbb-exit-codes-work-')
    const backup = await runCli(['backup', 'run', '--json'], db())
    expect(backup.code).toBe(0)
    backupId = JSON.parse(backup.stdout).metadata.id
    const source = await writeSourceSegment(work, segmentName(7), 64 * 1024, 7)
    segment = {name: segmentName(7), file: source.file}
    expect((await runCli(['wal', 'push', segment.file], storage())).code).toBe(0)
    // The same WAL file name with other content: what a second server archiving here would push.
    await fs.mkdir(path.join(work, 'other'))
    conflicting = (await writeSourceSegment(path.join(work, 'other'), segmentName(7), 64 * 1024, 8)).file
    receiver = await startReceiver()
    const closed = await startReceiver()
    await closed.close()
    closedUrl = closed.url
    // A complete, verified backup whose SQL fails half-way: what a drill must call failed. An hour
    // older than the real one: not the newest (the check rows), not expired (the retention rows).
    const anHourAgo = new Date(Date.now() - 3600_000)
    unrestorable = `backup_${compactUtc(anHourAgo)}.sql.gz`
    await writeCraftedBackup(dir, 'CREATE TABLE t (id int);\nINSERT INTO no_such_table VALUES (1);\n', {id: unrestorable, createdAt: anHourAgo.toISOString()})
  }, 120_000)

  afterAll(async () => {
    await receiver?.close()
    await cluster?.destroy()
    await Promise.all([dir, work].filter(Boolean).map((d) => fs.rm(d, {recursive: true, force: true})))
  })

  const rows: Row[] = [
    {command: 'backup run', situation: 'backup stored and verified', args: () => ['backup', 'run'], env: db, expected: 0},
    {command: 'backup run', situation: 'the database refuses the password', args: () => ['backup', 'run'], env: () => ({...db(), DB_PASSWORD: 'wrong-password-0'}), expected: 1},
    {command: 'backup run', situation: 'invalid setting', args: () => ['backup', 'run'], env: () => ({...db(), DB_PORT: 'not-a-port'}), expected: 2},
    {command: 'backup run', situation: 'DB_NAMES: one database missing, the other stored', args: () => ['backup', 'run'], env: () => ({...db(), DB_NAMES: 'shop,no_such_db', BACKUP_GLOBALS: 'false'}), expected: 3},
    {command: 'backup list', situation: 'listed', args: () => ['backup', 'list'], env: storage, expected: 0},
    {command: 'backup list', situation: 'storage unreadable (directory missing)', args: () => ['backup', 'list'], env: missing, expected: 1},
    {command: 'backup list', situation: 'invalid setting', args: () => ['backup', 'list'], env: () => ({...storage(), STORAGE_BACKEND: 'no-such-backend'}), expected: 2},
    {command: 'backup download', situation: 'downloaded and verified', args: () => ['backup', 'download', backupId, '-o', path.join(work, `dl-${Date.now()}`)], env: storage, expected: 0},
    {command: 'backup download', situation: 'no such backup', args: () => ['backup', 'download', 'backup_20200101T000000Z.sql.gz', '-o', path.join(work, 'none')], env: storage, expected: 1},
    {command: 'backup download', situation: 'malformed backup id', args: () => ['backup', 'download', '../etc/passwd', '-o', path.join(work, 'bad')], env: storage, expected: 2},
    {command: 'prune', situation: 'retention applied', args: () => ['prune'], env: storage, expected: 0},
    {command: 'prune', situation: 'storage unreadable (directory missing)', args: () => ['prune'], env: missing, expected: 1},
    {command: 'prune', situation: 'invalid setting', args: () => ['prune'], env: () => ({...storage(), RETENTION_DAYS: '-1'}), expected: 2},
    {command: 'restore', situation: 'restored (drill into a scratch database)', args: () => ['restore', backupId, '--target-db', 'drill', '--force'], env: db, expected: 0},
    {command: 'restore', situation: 'no such backup', args: () => ['restore', 'backup_20200101T000000Z.sql.gz', '--force'], env: db, expected: 1},
    {command: 'restore', situation: 'no terminal and no --force', args: () => ['restore', backupId], env: db, expected: 2},
    // oclif's own parse errors under --json: the JSON says exitCode 2, and so must the process.
    {command: 'backup list', situation: 'unknown flag, --json', args: () => ['backup', 'list', '--no-such-flag', '--json'], env: storage, expected: 2},
    {command: 'restore', situation: '--alter-roles without --globals, --json', args: () => ['restore', '--alter-roles', '--json'], env: db, expected: 2},
    {command: 'wal push', situation: 'archived', args: () => ['wal', 'push', segment.file], env: storage, expected: 0},
    {command: 'wal push', situation: 'same name, other content (split-brain)', args: () => ['wal', 'push', conflicting], env: storage, expected: 1},
    {command: 'wal push', situation: 'not a WAL file name', args: () => ['wal', 'push', path.join(work, 'notes.txt')], env: storage, expected: 2},
    {command: 'wal fetch', situation: 'fetched', args: () => ['wal', 'fetch', segment.name, path.join(work, `RECOVERYXLOG-${Date.now()}`)], env: storage, expected: 0},
    {command: 'wal fetch', situation: 'not in the archive', args: () => ['wal', 'fetch', segmentName(0xfff), path.join(work, 'RECOVERYXLOG-none')], env: storage, expected: 1},
    {command: 'check', situation: 'the newest backup is fresh', args: () => ['check'], env: freshChecks, expected: 0},
    {command: 'check', situation: 'no backup at all', args: () => ['check'], env: () => ({...freshChecks(), BACKUP_LOCAL_DIR: work}), expected: 1},
    {command: 'check', situation: 'invalid setting', args: () => ['check'], env: () => ({...freshChecks(), CHECK_WAL: 'maybe'}), expected: 2},
    // After the check rows: the failed drill below makes dbb check's drill check fail, as it should.
    {command: 'drill', situation: 'passed', args: () => ['drill', backupId], env: db, expected: 0},
    {command: 'drill', situation: 'failed: the dump does not restore', args: () => ['drill', unrestorable], env: db, expected: EXIT_DRILL_FAILED},
    {command: 'drill', situation: 'no such backup', args: () => ['drill', 'backup_20200101T000000Z.sql.gz'], env: db, expected: 1},
    {command: 'drill', situation: 'malformed backup id', args: () => ['drill', '../etc/passwd'], env: db, expected: 2},
    {command: 'serve', situation: 'invalid setting (refuses to start)', args: () => ['serve'], env: () => ({...db(), HTTP_PORT: 'eighty'}), expected: 2},
    {command: 'backends', situation: 'listed', args: () => ['backends'], env: () => ({}), expected: 0},
    {command: 'notify test', situation: 'every target accepted', args: () => ['notify', 'test'], env: () => ({NOTIFY_URLS: `webhook+${receiver.url}/hook`}), expected: 0},
    {command: 'notify test', situation: 'a target is unreachable', args: () => ['notify', 'test'], env: () => ({NOTIFY_URLS: `webhook+${receiver.url}/hook,webhook+${closedUrl}/gone`, NOTIFY_TIMEOUT: '2s'}), expected: 1},
    {command: 'notify test', situation: 'no target configured', args: () => ['notify', 'test'], env: () => ({}), expected: 2},
  ]

  /** PostgreSQL's restore_command reads 1–125 as "not in the archive": every other failure must exit above 125. */
  const restoreCommandContract: Row[] = [
    {command: 'wal fetch', situation: 'storage directory missing (volume not mounted)', args: () => ['wal', 'fetch', segment.name, path.join(work, 'RECOVERYXLOG-m')], env: missing, expected: '>125'},
    {command: 'wal fetch', situation: 'invalid setting', args: () => ['wal', 'fetch', segment.name, path.join(work, 'RECOVERYXLOG-c')], env: () => ({...storage(), STORAGE_BACKEND: 'no-such-backend'}), expected: '>125'},
    {command: 'wal fetch', situation: 'destination directory missing', args: () => ['wal', 'fetch', segment.name, path.join(work, 'no-dir', 'RECOVERYXLOG')], env: storage, expected: '>125'},
  ]

  const matches = (code: number | null, expected: Expected) => (expected === '>125' ? code !== null && code > 125 : code === expected)

  it('every command has a row for each code the README documents for it', () => {
    const byCommand = new Map<string, Set<Expected>>()
    for (const row of [...rows, ...restoreCommandContract]) byCommand.set(row.command, (byCommand.get(row.command) ?? new Set()).add(row.expected))
    expect(Object.fromEntries([...byCommand].map(([command, codes]) => [command, [...codes].map(String).sort()]))).toEqual({
      'backup run': ['0', '1', '2', '3'],
      'backup list': ['0', '1', '2'],
      'backup download': ['0', '1', '2'],
      drill: ['0', '1', '2', String(EXIT_DRILL_FAILED)],
      prune: ['0', '1', '2'],
      restore: ['0', '1', '2'],
      'wal push': ['0', '1', '2'],
      'wal fetch': ['0', '1', '>125'],
      check: ['0', '1', '2'],
      serve: ['2'],
      backends: ['0'],
      'notify test': ['0', '1', '2'],
    })
  })

  it.each(rows)('$command, $situation: exit $expected', async ({args, env, expected}) => {
    const result = await runCli(args(), env())
    expect([result.code, matches(result.code, expected) ? 'as documented' : result.stderr]).toEqual([result.code, 'as documented'])
  })

  it.each(restoreCommandContract)('restore_command contract: $command, $situation: exit $expected (never 1–125)', async ({args, env, expected}) => {
    const result = await runCli(args(), env())
    expect([result.code, matches(result.code, expected) ? 'as documented' : `exit ${result.code}: ${result.stderr}`]).toEqual([result.code, 'as documented'])
  })
})
