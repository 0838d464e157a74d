import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {runServerProgram, runTool} from '../backup/child-process'
import {OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import {LeftoverOwner, ownerGone, sameScope, thisOwner} from '../leftover-owner'
import {readPostmasterLock} from '../postmaster-lock'
import {processAlive, processStartedAt} from '../process-alive'

/**
 * The private PostgreSQL server of a physical drill: a data directory in a temporary directory
 * that dbb marks as its own, a server listening only on a unix socket in that directory (no TCP),
 * run as a non-root OS user (PostgreSQL refuses root), stopped and removed in every case this
 * process survives. A SIGKILLed drill's directory (and the server still running in it) is found
 * by the next drill through the marker and removed; a directory without the marker is never touched.
 */

/** Directories are `<tmpdir>/dbb-drill-pgdata-XXXXXX` with this marker file in them. */
export const PRIVATE_DIR_PREFIX = 'dbb-drill-pgdata-'
export const PRIVATE_DIR_MARKER = 'dbb-drill.json'

interface DirectoryMarker {
  pid: number
  /** The drill's pid scope (leftover-owner.ts); absent in markers of an older dbb, which only had the hostname. */
  scope?: string
  hostname: string
  backupId: string
  startedAt: string
}

/** The OS user the server runs as: ourselves, or (as root) DRILL_OS_USER. */
export interface ServerUser {
  name: string
  uid: number
  gid: number
  /** Whether processes must be started with uid/gid switched (we are root). */
  switchUser: boolean
}

export async function serverUser(osUser: string): Promise<ServerUser> {
  const uid = process.getuid?.()
  if (uid === undefined) throw new UsageError('a physical drill needs a POSIX system (PostgreSQL server binaries, uid switching)')
  if (uid !== 0) return {name: os.userInfo().username, uid, gid: process.getgid?.() ?? uid, switchUser: false}
  const id = async (flag: string) => Number((await runTool('id', [flag, osUser], {}, {timeout: 10_000})).stdout.trim())
  let resolved: {uid: number; gid: number}
  try {
    resolved = {uid: await id('-u'), gid: await id('-g')}
  } catch {
    throw new UsageError(
      `a physical drill runs PostgreSQL, which refuses to run as root; dbb runs as root and DRILL_OS_USER is "${osUser}", which is not a user on this system: ` +
        `set DRILL_OS_USER to an existing non-root user (e.g. the postgres user of the server package), or run dbb drill as a non-root user`,
    )
  }

  if (resolved.uid === 0) throw new UsageError(`DRILL_OS_USER "${osUser}" is root; PostgreSQL refuses to run as root: name a non-root user`)
  return {name: osUser, ...resolved, switchUser: true}
}

export interface PrivateDirectory {
  root: string
  dataDir: string
  logFile: string
  /** The marker that makes the directory dbb's; the drill keeps it touched while it runs (keepTouched). */
  marker: string
}

/** A marked, private temporary directory owned by the server user (mode 0700); the data directory inside is created by the restore. */
export async function createPrivateDirectory(user: ServerUser, backupId: string): Promise<PrivateDirectory> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), PRIVATE_DIR_PREFIX))
  const {pid, scope} = thisOwner()
  const marker: DirectoryMarker = {pid, scope, hostname: os.hostname(), backupId, startedAt: new Date().toISOString()}
  await fs.writeFile(path.join(root, PRIVATE_DIR_MARKER), `${JSON.stringify(marker)}\n`, {mode: 0o600})
  const logFile = path.join(root, 'server.log')
  await fs.writeFile(logFile, '', {mode: 0o600})
  if (user.switchUser) {
    await fs.chown(root, user.uid, user.gid)
    await fs.chown(logFile, user.uid, user.gid)
  }

  await fs.chmod(root, 0o700)
  return {root, dataDir: path.join(root, 'data'), logFile, marker: path.join(root, PRIVATE_DIR_MARKER)}
}

/**
 * The postmaster running on `dataDir`: postmaster.pid names it and the directory, and the process
 * with that pid is the one that wrote the file — it started no later than the start time the file
 * records (PostgreSQL writes its own, in whole seconds). A process given the pid later (pid reuse,
 * a restarted container numbering from 1 again) started after it, so it is never taken for the
 * server and never signalled. Where /proc does not say when a process started, the pid alone.
 */
async function postmasterOf(dataDir: string): Promise<number | undefined> {
  // Unreadable: no server of ours can be proven there (the sweep then removes the directory, and a server in it stops by itself).
  const lock = await readPostmasterLock(dataDir).catch(() => undefined)
  const pid = lock?.pid
  if (pid === undefined || lock?.dataDir !== dataDir || !processAlive(pid)) return undefined
  const started = processStartedAt(pid)
  if (started === undefined || lock.startedAt === undefined) return pid
  // +2 s: both clocks are whole seconds or ticks apart; −60 s: the server writes the file moments after it starts.
  return started <= lock.startedAt + 2000 && started >= lock.startedAt - 60_000 ? pid : undefined
}

/** Stops a postmaster by signal: SIGQUIT (immediate shutdown: it ends its children), then SIGKILL. */
async function killPostmaster(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGQUIT')
  } catch {
    return
  }

  const deadline = Date.now() + 10_000
  while (processAlive(pid) && Date.now() < deadline) await sleep(100)
  if (processAlive(pid)) process.kill(pid, 'SIGKILL')
}

/**
 * Removes what SIGKILLed drills left: each marked directory whose drill provably runs no more
 * (leftover-owner.ts: by pid in this pid namespace, by the marker's heartbeat in another one, such
 * as a sibling container sharing TMPDIR), its server stopped first — by signal only when the drill
 * ran in this namespace, and only a process that is provably that server (postmasterOf). A server
 * of another namespace notices its data directory is gone and shuts itself down (PostgreSQL checks
 * its postmaster.pid every minute). Returns the removed paths.
 */
export async function sweepLeftovers(logger: Logger, tmp = os.tmpdir(), now = Date.now()): Promise<string[]> {
  const removed: string[] = []
  const entries = await fs.readdir(tmp).catch(() => [] as string[])
  for (const entry of entries.filter((name) => name.startsWith(PRIVATE_DIR_PREFIX))) {
    const root = path.join(tmp, entry)
    const markerFile = path.join(root, PRIVATE_DIR_MARKER)
    let marker: DirectoryMarker
    let touched: Date
    try {
      marker = JSON.parse(await fs.readFile(markerFile, 'utf8')) as DirectoryMarker
      touched = (await fs.stat(markerFile)).mtime
    } catch {
      continue // not provably dbb's: never touched
    }

    // An older marker has no scope: its hostname tells this host's (the pid rule) from another's (the heartbeat rule).
    const owner: LeftoverOwner = {pid: marker.pid, scope: marker.scope ?? (marker.hostname === os.hostname() ? undefined : `host ${marker.hostname}`)}
    if (!ownerGone(owner, touched, now)) continue
    const pid = owner.scope === undefined || sameScope(owner) ? await postmasterOf(path.join(root, 'data')) : undefined
    if (pid !== undefined) await killPostmaster(pid)
    await fs.rm(root, {recursive: true, force: true})
    removed.push(root)
    logger.warn({event: 'drill.leftover_removed', directory: root, backupId: marker.backupId}, `removed ${root}, left by a physical drill that was killed`)
  }

  return removed
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** The settings that make the restored cluster a private, throwaway server (written last in postgresql.auto.conf, so they win). */
export function privateServerSettings(directory: PrivateDirectory, port: number): Record<string, string> {
  return {
    // No TCP at all; the port only names the socket file.
    listen_addresses: '',
    port: String(port),
    unix_socket_directories: directory.root,
    unix_socket_permissions: '0700',
    hba_file: path.join(directory.dataDir, 'pg_hba.conf'),
    ident_file: path.join(directory.dataDir, 'pg_ident.conf'),
    shared_buffers: '16MB',
    // A throwaway copy: durability buys nothing, and a production server's files (certificates, conf.d) are not here.
    fsync: 'off',
    ssl: 'off',
    logging_collector: 'off',
    cluster_name: 'dbb-drill',
    synchronous_standby_names: '',
    primary_conninfo: '',
    hot_standby: 'on',
    archive_mode: 'off',
  }
}

/**
 * Makes the restored data directory startable as a private server: postgresql.conf exists (a
 * Debian cluster keeps it in /etc, outside the backup), local connections are trusted (the socket
 * directory is 0700: only the server user and root reach it), the settings above win.
 */
export async function preparePrivateServer(directory: PrivateDirectory, user: ServerUser, port: number): Promise<void> {
  const {dataDir} = directory
  const conf = path.join(dataDir, 'postgresql.conf')
  if (!existsSync(conf)) await fs.writeFile(conf, '# written by dbb drill: the backup had no postgresql.conf\n')
  const ident = path.join(dataDir, 'pg_ident.conf')
  if (!existsSync(ident)) await fs.writeFile(ident, '')
  await fs.writeFile(path.join(dataDir, 'pg_hba.conf'), '# dbb drill: a private server on a socket only its user and root can reach\nlocal all all trust\n')
  const block = Object.entries(privateServerSettings(directory, port))
    .map(([key, value]) => `${key} = '${value.replace(/'/g, "''")}'`)
    .join('\n')
  await fs.appendFile(path.join(dataDir, 'postgresql.auto.conf'), `\n# dbb drill: a private server (listen on a unix socket only, never archive)\n${block}\n`)
  if (user.switchUser) await runTool('chown', ['-R', `${user.uid}:${user.gid}`, directory.root], {})
}

/** pg_ctl as the server user; the environment is the one given (the restore_command may need storage credentials). */
async function pgCtl(binDir: string, user: ServerUser, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  await runServerProgram(path.join(binDir, 'pg_ctl'), args, {
    env,
    cwd: os.tmpdir(),
    ...(user.switchUser ? {uid: user.uid, gid: user.gid} : {}),
  })
}

export async function startPrivateServer(binDir: string, user: ServerUser, directory: PrivateDirectory, env: NodeJS.ProcessEnv): Promise<void> {
  // -W (no wait; waiting is pg_ctl's default): recovery may take long, and a server that dies during it is a verdict, not a start failure. The drill polls it.
  await pgCtl(binDir, user, ['-D', directory.dataDir, '-l', directory.logFile, '-W', 'start'], env).catch((error: unknown) => {
    throw new OperationError(`the drill's PostgreSQL server did not start: ${errorMessage(error)}`)
  })
}

/** Whether the postmaster of the directory is running (undefined: not started yet or gone). */
export async function runningPostmaster(directory: PrivateDirectory): Promise<number | undefined> {
  return postmasterOf(directory.dataDir)
}

/** Stops the server (fast, then immediate, then by signal) and removes the directory. Never throws. */
export async function destroyPrivateServer(binDir: string | undefined, user: ServerUser, directory: PrivateDirectory, logger: Logger): Promise<boolean> {
  try {
    if (binDir && (await postmasterOf(directory.dataDir)) !== undefined) {
      const env = {PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8'}
      await pgCtl(binDir, user, ['-D', directory.dataDir, '-m', 'fast', '-w', '-t', '20', 'stop'], env).catch(() =>
        pgCtl(binDir, user, ['-D', directory.dataDir, '-m', 'immediate', '-w', '-t', '20', 'stop'], env).catch(() => {}),
      )
    }

    const pid = await postmasterOf(directory.dataDir)
    if (pid !== undefined) await killPostmaster(pid)
    await fs.rm(directory.root, {recursive: true, force: true})
    return true
  } catch (error) {
    logger.error({event: 'drill.cleanup_failed', directory: directory.root, error: errorMessage(error)}, `could not remove ${directory.root}; the next drill removes it`)
    return false
  }
}

/** The last lines of the server log that say why it stopped (FATAL/PANIC/ERROR and dbb wal fetch's own lines). */
export async function serverLogTail(directory: PrivateDirectory, lines = 8): Promise<string> {
  const text = await fs.readFile(directory.logFile, 'utf8').catch(() => '')
  const all = text.split('\n').filter((line) => line.trim() !== '')
  const telling = all.filter((line) => /FATAL|PANIC|ERROR|dbb|invalid|missing|not found|could not/i.test(line))
  return (telling.length > 0 ? telling : all).slice(-lines).join(' | ')
}
