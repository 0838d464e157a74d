import {execFileSync, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fsSync from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {EXIT_WAL_NOT_IN_ARCHIVE} from '../../src/errors'
import {walForegroundFetchCommand} from '../../src/restore/recovery-config'
import {queueDirFor, storageIdentity} from '../../src/wal/foreground'
import {BIN, CliResult, ROOT, cliEnv, runCli, tempDir} from '../helpers/cli'
import {PgCluster, isRoot, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'
import {stopLockHolder, stopPrefetchers, waitFor, writeStandInSegments} from '../helpers/wal'

/**
 * Output that cannot be written never turns work that was done into a failure. PostgreSQL hands
 * archive_command and restore_command its own stdout and stderr: on Debian's default cluster
 * (logging_collector off) that is the log file pg_ctlcluster opened under /var/log, whose disk
 * fills. A `wal push` that stored the segment and then exited 1 because its "Archived …" line or a
 * log line could not be written was retried by PostgreSQL for ever while pg_wal grew. The same for
 * a pipe whose reader went away (`dbb … 2>&1 | logger`, the reader killed). The exit code is the
 * contract: 0 only for the work done, 1 only for "not in archive", as when the output is fine.
 */
describe('output that cannot be written (a full log disk, a closed pipe)', () => {
  let workDir: string
  let storeDir: string
  let fullDisk: string
  const name = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`
  let contents: Map<number, Buffer>

  /**
   * Runs dbb with each of stdout and stderr either appended to a file on the full tmpfs (as
   * PostgreSQL's log file), a pipe its reader closed before dbb wrote anything, or a pipe read here.
   */
  type Output = 'full disk' | 'closed pipe' | 'read'
  const runWith = (args: string[], env: Record<string, string>, stdout: Output, stderr: Output = stdout, program?: string): Promise<CliResult> => {
    const log = fsSync.openSync(path.join(fullDisk, 'postgresql.log'), 'a')
    try {
      const stdio = (output: Output) => (output === 'full disk' ? log : 'pipe')
      const [command, commandArgs] = program ? [program, args.slice(1)] : [process.execPath, [BIN, ...args]]
      const child = spawn(command, commandArgs, {env: cliEnv(env), cwd: workDir, stdio: ['ignore', stdio(stdout), stdio(stderr)]})
      const result = {code: null as number | null, stdout: '', stderr: ''}
      for (const [output, stream, key] of [[stdout, child.stdout, 'stdout'], [stderr, child.stderr, 'stderr']] as const) {
        if (output === 'closed pipe') stream!.destroy()
        else if (output === 'read') stream!.setEncoding('utf8').on('data', (text: string) => (result[key] += text))
      }

      return new Promise((resolve, reject) => {
        child.on('error', reject)
        child.on('close', (code) => resolve({...result, code}))
      })
    } finally {
      fsSync.closeSync(log)
    }
  }

  /** The exit code of dbb (or of `program`, args[0] naming it) with both streams as `output`. */
  const exitCode = async (args: string[], env: Record<string, string>, output: Output, program?: string) => (await runWith(args, env, output, output, program)).code

  const storedBytes = async (n: number) => {
    const restored = path.join(workDir, `check-${n}-${randomBytes(4).toString('hex')}`)
    expect((await runCli(['wal', 'fetch', name(n), restored], {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    return fs.readFile(restored)
  }

  beforeAll(async () => {
    if (!isRoot) throw new Error('this test mounts a full tmpfs as the log disk: run the suite as root, as CI does')
    workDir = await tempDir('dbb-unwritable-')
    storeDir = path.join(workDir, 'store')
    fullDisk = path.join(workDir, 'log-disk')
    await fs.mkdir(storeDir)
    await fs.mkdir(fullDisk)
    await fs.mkdir(path.join(workDir, 'pg_wal'))
    contents = await writeStandInSegments(path.join(workDir, 'pg_wal'), 6, name)

    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', fullDisk])
    // Fill it: every later write there fails with ENOSPC.
    await fs.writeFile(path.join(fullDisk, 'filler'), Buffer.alloc(64 * 1024)).catch(() => {})
    await expect(fs.appendFile(path.join(fullDisk, 'postgresql.log'), 'x'.repeat(8192))).rejects.toThrow(/ENOSPC/)
  })

  afterAll(async () => {
    await stopLockHolder(path.join(workDir, 'spool-async', 'uploader.pid'))
    await stopPrefetchers(path.join(workDir, 'spool-prefetch'))
    execFileSync('umount', [fullDisk])
    await fs.rm(workDir, {recursive: true, force: true})
  })

  it('wal push and wal fetch on a full log disk: the segment is stored and restored, exit 0; the end of the archive is still exit 1', async () => {
    expect(await exitCode(['wal', 'push', `pg_wal/${name(1)}`], {BACKUP_LOCAL_DIR: storeDir}, 'full disk')).toBe(0)
    expect((await storedBytes(1)).equals(contents.get(1)!)).toBe(true)
    // PostgreSQL's retry after a lost acknowledgement: "already archived, identical", still 0.
    expect(await exitCode(['wal', 'push', `pg_wal/${name(1)}`], {BACKUP_LOCAL_DIR: storeDir}, 'full disk')).toBe(0)

    expect(await exitCode(['wal', 'fetch', name(1), 'pg_wal/RECOVERYXLOG'], {BACKUP_LOCAL_DIR: storeDir}, 'full disk')).toBe(0)
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))).equals(contents.get(1)!)).toBe(true)
    expect(await exitCode(['wal', 'fetch', name(0x40), 'pg_wal/RECOVERYXLOG'], {BACKUP_LOCAL_DIR: storeDir}, 'full disk')).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
  }, 60_000)

  it('wal push --async on a full log disk: acknowledged once spooled, then stored by the uploader', async () => {
    const spoolDir = path.join(workDir, 'spool-async')
    expect(await exitCode(['wal', 'push', '--async', `pg_wal/${name(2)}`], {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir}, 'full disk')).toBe(0)
    await waitFor('the uploader to store segment 2', async () => (fsSync.existsSync(path.join(storeDir, 'wal', `${name(2)}.gz`)) ? true : undefined))
    expect((await storedBytes(2)).equals(contents.get(2)!)).toBe(true)
  }, 60_000)

  it('wal push --async whose uploader.log cannot be opened (another user made it, say): acknowledged, then stored', async () => {
    // Before, the push failed (exit 1) after spooling, and so did every retry: archiving stalled.
    // As root, a directory in its place is what cannot be opened (EISDIR); a file of another user's
    // fails the same way for the server's user (EACCES).
    const spoolDir = path.join(workDir, 'spool-no-log')
    await fs.mkdir(path.join(spoolDir, 'uploader.log'), {recursive: true})
    const push = await runCli(['wal', 'push', '--async', `pg_wal/${name(3)}`], {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir}, {cwd: workDir})
    expect(push.code).toBe(0)
    await waitFor('the uploader to store segment 3', async () => (fsSync.existsSync(path.join(storeDir, 'wal', `${name(3)}.gz`)) ? true : undefined))
    expect((await storedBytes(3)).equals(contents.get(3)!)).toBe(true)
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
  }, 60_000)

  it('wal push and wal fetch with both pipes closed by their reader: exit 0, the work done', async () => {
    const storeOfItsOwn = path.join(workDir, 'store-closed-pipes')
    await fs.mkdir(storeOfItsOwn)
    expect(await exitCode(['wal', 'push', `pg_wal/${name(3)}`], {BACKUP_LOCAL_DIR: storeOfItsOwn}, 'closed pipe')).toBe(0)
    expect(await exitCode(['wal', 'fetch', name(3), 'pg_wal/RECOVERYXLOG3'], {BACKUP_LOCAL_DIR: storeOfItsOwn}, 'closed pipe')).toBe(0)
    expect((await fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG3'))).equals(contents.get(3)!)).toBe(true)
  }, 60_000)

  it('wal fetch served by the prefetcher, on a full log disk: exit 0 with the right bytes', async () => {
    for (const n of [4, 5, 6]) expect((await runCli(['wal', 'push', `pg_wal/${name(n)}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})).code).toBe(0)
    const env = {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: path.join(workDir, 'spool-prefetch')}
    for (const n of [4, 5, 6]) {
      expect(await exitCode(['wal', 'fetch', name(n), `pg_wal/RECOVERYXLOG${n}`], env, 'full disk')).toBe(0)
      expect((await fs.readFile(path.join(workDir, 'pg_wal', `RECOVERYXLOG${n}`))).equals(contents.get(n)!)).toBe(true)
    }
  }, 60_000)

  it('restore_command as dbb restore writes it (bin/dbb-wal sourced), on a full log disk: the sh serves the queue, exit 0 with the right bytes', async () => {
    const spoolDir = path.join(workDir, 'spool-sourced')
    const env = {BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir}
    const restoreCommand = (node: string, n: number, destination: string) => ['/bin/sh', '-c', walForegroundFetchCommand(node, path.join(ROOT, 'bin', 'dbb-wal'), []).replace('%f', name(n)).replace('%p', destination)]
    for (const n of [4, 5, 6]) expect((await runCli(['wal', 'push', `pg_wal/${name(n)}`], {BACKUP_LOCAL_DIR: storeDir}, {cwd: workDir})).code).toBe(0)
    try {
      // The first request starts Node, which starts the prefetcher; once 5 and 6 are queued, the sh
      // alone serves them: with no Node to fall back on, exit 0 can only come from the queue.
      expect(await exitCode(restoreCommand(process.execPath, 4, 'pg_wal/SOURCED4'), env, 'full disk', '/bin/sh')).toBe(0)
      const queue = queueDirFor(spoolDir, storageIdentity(env))
      await waitFor('5 and 6 queued', async () => ([5, 6].every((n) => fsSync.existsSync(path.join(queue, name(n)))) ? true : undefined))
      for (const n of [5, 6]) expect(await exitCode(restoreCommand(path.join(workDir, 'no-node-here'), n, `pg_wal/SOURCED${n}`), env, 'full disk', '/bin/sh')).toBe(0)
      for (const n of [4, 5, 6]) expect((await fs.readFile(path.join(workDir, `pg_wal/SOURCED${n}`))).equals(contents.get(n)!)).toBe(true)
      // Past the end of the archive: still exit 1.
      expect(await exitCode(restoreCommand(process.execPath, 0x41, 'pg_wal/SOURCED'), env, 'full disk', '/bin/sh')).toBe(EXIT_WAL_NOT_IN_ARCHIVE)
    } finally {
      await stopPrefetchers(spoolDir)
    }
  }, 60_000)

  describe('a backup whose log cannot be written', () => {
    let cluster: PgCluster

    beforeAll(async () => {
      cluster = await startPostgres()
      await seedDatabase(cluster, 'shop', 2000)
    })

    afterAll(async () => {
      await cluster?.destroy()
    })

    it('backup run, restore and prune reporting to a full disk or a closed pipe: exit 0 and the work done; what was asked for stays strict', async () => {
      const backupDir = path.join(workDir, 'backups')
      await fs.mkdir(backupDir)
      const env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir, LOG_LEVEL: 'debug'}
      const ids = []
      for (const stderr of ['full disk', 'closed pipe'] as const) {
        const run = await runWith(['backup', 'run', '--json', '--no-prune'], env, 'read', stderr)
        expect(run.code).toBe(0)
        ids.push((JSON.parse(run.stdout) as {metadata: {id: string}}).metadata.id)
      }

      // As cron runs it: `dbb backup run >> /var/log/dbb.log 2>&1`, the report and the log on the full disk.
      await new Promise((resolve) => setTimeout(resolve, 1100)) // backup ids have a one-second resolution
      expect(await exitCode(['backup', 'run', '--no-prune'], env, 'full disk')).toBe(0)
      const listed = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout) as {id: string}[]
      expect(listed).toHaveLength(3)
      expect(listed.map((backup) => backup.id)).toEqual(expect.arrayContaining(ids))

      const id = ids[0]
      expect(await exitCode(['restore', id, '--target-db', 'shop_copy', '--force'], env, 'full disk')).toBe(0)
      expect(await cluster.psql('SELECT count(*) FROM events', 'shop_copy')).toBe(await cluster.psql('SELECT count(*) FROM events', 'shop'))
      expect(await exitCode(['prune'], {...env, BACKUPS_TO_RETAIN: '1', RETENTION_DAYS: '0'}, 'closed pipe')).toBe(0)
      expect(JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout)).toHaveLength(1)
      const [kept] = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout) as {id: string}[]

      // Data stays strict: a dump or --json that cannot be written fails the command, never exit 0.
      // Exit 1 and a clean `Error:` line naming the cause, not a stack trace.
      const asked: [string[], Record<string, string>][] = [
        [['backup', 'download', kept.id, '-o', '-'], {BACKUP_LOCAL_DIR: backupDir}],
        [['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir}],
        [['backup', 'list'], {BACKUP_LOCAL_DIR: backupDir}],
        [['restore', kept.id, '--target-db', 'shop_copy', '--force', '--json'], env],
        [['wal', 'push', '--json', `pg_wal/${name(1)}`], {BACKUP_LOCAL_DIR: storeDir}],
      ]
      for (const [args, askedEnv] of asked) {
        const failed = await runWith(args, {...askedEnv, LOG_LEVEL: 'error'}, 'full disk', 'read')
        expect({args, code: failed.code}).toEqual({args, code: 1})
        expect(failed.stderr).toMatch(/^Error: .*ENOSPC/m)
        expect(failed.stderr).not.toMatch(/^\s+at /m)
      }

      // A reader that went away on purpose (`dbb backup list | head`) is quiet, as before.
      const intoHead = await runWith(['backup', 'list'], {BACKUP_LOCAL_DIR: backupDir}, 'closed pipe', 'read')
      expect(intoHead.code).toBe(0)
      expect(intoHead.stderr).toBe('')
    }, 120_000)
  })
})
