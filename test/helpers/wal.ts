import {ChildProcess, StdioOptions, execFile, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {processStartTime} from '../../src/process-alive'
import {identityFileText, identityLine, uploaderLock} from '../../src/wal/foreground'
import {BIN, cliEnv} from './cli'
import {PgCluster, asServerUser, freePort, isRoot} from './postgres'

const run = promisify(execFile)

/** postgresql.conf settings for continuous archiving into a local dbb storage directory (writable by postgres). */
export function archivingSettings(storeDir: string): Record<string, string> {
  return {
    wal_level: 'replica',
    archive_mode: 'on',
    // Absolute paths: archive_command runs as postgres, in the data directory, with the server's PATH.
    archive_command: `'${process.execPath} ${BIN} wal push --local-dir ${storeDir} %p'`,
  }
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/**
 * Makes process `pid` (this one by default) stand in for a prefetcher that holds `queue` and has
 * published it for the archive of `identity` (storageIdentity): the lock file and the identity file
 * as prefetch() writes them, so bin/dbb-wal and Node serve the queue (queueServed).
 */
export function standInPrefetcher(queue: string, identity: string, pid = process.pid): void {
  writeFileSync(path.join(queue, 'uploader.pid'), `${pid}\n\n${processStartTime(pid) ?? ''}\n`)
  writeFileSync(path.join(queue, 'identity'), identityFileText(identityLine(identity), uploaderLock(queue)!))
}

/**
 * Stops every prefetcher of `spoolDir` (each queue's uploader.pid) and waits until it is gone: a
 * detached prefetcher outlives the fetch that started it, and one still writing into its queue makes
 * removing the test's directory fail (ENOTEMPTY).
 */
export async function stopPrefetchers(spoolDir: string): Promise<void> {
  const queues = await fs.readdir(path.join(spoolDir, 'fetch-queue')).catch(() => [] as string[])
  for (const queue of queues) await stopLockHolder(path.join(spoolDir, 'fetch-queue', queue, 'uploader.pid'))
}

/** SIGKILLs the process a lock file (`uploader.pid`: a spool uploader's or a prefetcher's) names, and waits until it is gone. */
export async function stopLockHolder(lockFile: string): Promise<void> {
  const pid = Number((await fs.readFile(lockFile, 'utf8').catch(() => '')).split('\n')[0])
  if (!(pid > 0) || pid === process.pid) return
  const alive = () => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  if (alive()) process.kill(pid, 'SIGKILL')
  await waitFor(`process ${pid} (${path.basename(path.dirname(lockFile))}) to exit`, async () => (alive() ? undefined : true), 10_000)
}

/** Whether `pid` is `parent` or its child: a dbb run through runuser (asServerUser, when the tests run as root) is runuser's child. */
export function processOrChildOf(pid: number, parent: number): boolean {
  if (pid === parent) return true
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] === String(parent)
  } catch {
    return false
  }
}

export interface ServeReadingAhead {
  child: ChildProcess
  /** serve's own pid (runuser's child when the tests run as root): the lock holder to signal. */
  pid: number
  /** pg_wal as serve announces it in the lock, and as a push from the data directory names it. */
  walDir: string
}

/**
 * `dbb serve` as the server's OS user, uploading `spoolDir` into the local `storeDir` and reading
 * ahead the cluster's pg_wal (WAL_READ_AHEAD_DIR): the README's same-host setup. Resolves once
 * serve itself holds the spool with its lock naming pg_wal — not a detached uploader a push started,
 * and not serve before its probe of pg_wal passed. `bin` is another checkout's bin/run.js for the
 * benchmark's A/B runs; `env` adds to the clean CLI environment (cliEnv).
 */
export async function startServeReadingAhead(
  cluster: PgCluster,
  dirs: {storeDir: string; spoolDir: string},
  options: {bin?: string; env?: Record<string, string>; stdio?: StdioOptions; timeoutMs?: number} = {},
): Promise<ServeReadingAhead> {
  const walDir = path.join(cluster.dataDir, 'pg_wal')
  const [command, args] = asServerUser(process.execPath, [options.bin ?? BIN, 'serve'])
  const child = spawn(command, args, {
    env: cliEnv({
      ...cluster.dbbEnv(),
      BACKUP_LOCAL_DIR: dirs.storeDir,
      WAL_SPOOL_DIR: dirs.spoolDir,
      WAL_READ_AHEAD_DIR: walDir,
      API_TOKEN: 'serve-reading-ahead-token-0123456789abcdef',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(await freePort()),
      BACKUP_SCHEDULE: '0 3 1 1 *',
      ...options.env,
    }),
    stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
  })
  let exited = false
  child.once('exit', () => (exited = true))
  const physical = await fs.realpath(walDir)
  const pid = await waitFor(
    'dbb serve to hold the WAL spool, reading ahead pg_wal',
    async () => {
      if (exited) throw new Error(`dbb serve exited (${child.exitCode ?? child.signalCode}) before it took the WAL spool`)
      const held = uploaderLock(dirs.spoolDir)
      return held?.readAheadDir === physical && processOrChildOf(held.pid, child.pid!) ? held.pid : undefined
    },
    options.timeoutMs ?? 60_000,
  )
  return {child, pid, walDir: physical}
}

/** Closes the current WAL segment and waits until archive_command has stored it; returns its name. */
export async function switchWalAndWaitArchived(cluster: PgCluster, storeDir: string): Promise<string> {
  const segment = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  await waitFor(`${segment} in the archive`, async () => (existsSync(path.join(storeDir, 'wal', `${segment}.gz`)) ? true : undefined))
  return segment
}

/** After a restore: waits until recovery has ended and the server accepts writes (replay fetches one segment per process: allow minutes under load). */
export async function waitForPromotion(cluster: PgCluster): Promise<void> {
  await waitFor('the end of recovery', async () => ((await cluster.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f' ? true : undefined), 180_000)
}

export interface RestoredServer {
  port: number
  dataDir: string
  logFile: string
  psql(sql: string): Promise<string>
  stop(): Promise<void>
}

/**
 * Starts PostgreSQL on a data directory restored next to `source` (a drill into a scratch
 * directory while production keeps running): same binaries and socket directory, its own port
 * and log. Resolves once pg_ctl returns, which during archive recovery may be before it ends.
 */
export async function startRestoredServer(source: PgCluster, dataDir: string): Promise<RestoredServer> {
  const port = await freePort()
  const logFile = `${dataDir}.log`
  const pgCtl = (args: string[]) => {
    const [file, argv] = asServerUser(path.join(source.binDir, 'pg_ctl'), args)
    return run(file, argv, {env: {...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8'}})
  }

  await fs.writeFile(logFile, '')
  if (isRoot) await fs.chown(logFile, (await fs.stat(dataDir)).uid, (await fs.stat(dataDir)).gid)
  await pgCtl(['-D', dataDir, '-l', logFile, '-o', `-p ${port}`, '-w', '-t', '60', 'start'])
  return {
    port,
    dataDir,
    logFile,
    async psql(sql) {
      const env = {...process.env, PGHOST: source.host, PGPORT: String(port), PGUSER: source.user, PGPASSWORD: source.password, PGDATABASE: 'postgres'}
      const {stdout} = await run('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {env})
      return stdout.trim()
    },
    async stop() {
      await pgCtl(['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => {})
    },
  }
}

/** Whether a postmaster runs on `dataDir` (pg_ctl status: 0 running, 3 not running). */
export async function postmasterRunning(source: PgCluster, dataDir: string): Promise<boolean> {
  const [file, argv] = asServerUser(path.join(source.binDir, 'pg_ctl'), ['-D', dataDir, 'status'])
  return run(file, argv).then(
    () => true,
    () => false,
  )
}

/** The WAL file names in a local dbb storage directory. */
export async function archivedWal(storeDir: string): Promise<string[]> {
  const entries = await fs.readdir(path.join(storeDir, 'wal')).catch(() => [] as string[])
  return entries.filter((entry) => entry.endsWith('.gz')).map((entry) => entry.slice(0, -'.gz'.length)).sort()
}

/**
 * 1 MiB stand-ins for WAL segments 1…count in `walDir`, named by `name`: 128 KiB of random bytes then
 * zeros, as a partly filled segment is (the fetch and the prefetcher learn the segment size from the
 * file). Returns each one's bytes by number.
 */
export async function writeStandInSegments(walDir: string, count: number, name: (n: number) => string): Promise<Map<number, Buffer>> {
  const contents = new Map<number, Buffer>()
  for (let n = 1; n <= count; n++) {
    const content = Buffer.concat([randomBytes(128 * 1024), Buffer.alloc(896 * 1024)])
    contents.set(n, content)
    await fs.writeFile(path.join(walDir, name(n)), content)
  }

  return contents
}
