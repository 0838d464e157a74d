import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {EXIT_WAL_FETCH_FATAL, OperationError, UsageError} from '../errors'
import {POSTMASTER_LOCK_FILE, readPostmasterLock} from '../postmaster-lock'
import {bootedAt, processAlive} from '../process-alive'
import type {RecoveryTarget} from './base'

/**
 * The data directory side of a point-in-time restore: refusing a directory that is in use or
 * holds data, and the recovery settings PostgreSQL 12+ reads at its next start.
 */

/** PostgreSQL refuses to start without it: the file a base restore removes first and puts in place last. */
export const CONTROL_FILE = path.join('global', 'pg_control')

export async function checkDataDirectory(pgdata: string, options: {force: boolean}): Promise<void> {
  const stats = await fs.stat(pgdata).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw new UsageError(`--pgdata ${pgdata} cannot be read: ${error.code ?? error.message}`)
  })
  if (!stats) return
  if (!stats.isDirectory()) throw new UsageError(`--pgdata ${pgdata} is not a directory`)
  await refuseWhilePostmasterLock(pgdata)

  const entries = await fs.readdir(pgdata)
  if (entries.length > 0 && !options.force) {
    const unstartable = await fs.access(path.join(pgdata, CONTROL_FILE)).then(
      () => false,
      () => true,
    )
    const interrupted = unstartable && entries.some((entry) => STAGING_PREFIXES.some((prefix) => entry.startsWith(prefix)))
    throw new UsageError(
      interrupted
        ? `--pgdata ${pgdata} holds what an interrupted dbb restore left (${entries.length} entries; PostgreSQL will not start on it); use --force to restore into it again`
        : `--pgdata ${pgdata} is not empty (${entries.length} entries); use --force to replace its contents, or choose an empty directory`,
    )
  }
}

/**
 * Refuses a data directory whose postmaster.pid stands, as pgBackRest does: a server may be running
 * on it. A pid that runs here says so; one that does not proves nothing, because the server may run
 * in another container sharing the volume (a sidecar, a Job mounting the PVC), whose pids this
 * namespace does not see — a restore with --force would then delete a running cluster's files. The
 * one stale file that is provably stale: a server started before this machine last booted. Anything
 * else the operator removes, knowing the server is down (crashed or killed, which is what leaves it).
 */
async function refuseWhilePostmasterLock(pgdata: string): Promise<void> {
  const lock = await readPostmasterLock(pgdata).catch((error: NodeJS.ErrnoException) => {
    const file = path.join(pgdata, POSTMASTER_LOCK_FILE)
    throw new UsageError(`${file} cannot be read (${error.code ?? error.message}): a server may be running on ${pgdata}; stop it, or remove the file if none is`)
  })
  if (lock === undefined) return
  const {file, pid, startedAt} = lock
  const boot = bootedAt()
  if (startedAt !== undefined && boot !== undefined && startedAt < boot) return
  // A live postmaster usually belongs to another user (postgres): processAlive counts EPERM as alive.
  if (pid !== undefined && processAlive(pid)) {
    throw new UsageError(`PostgreSQL is running on ${pgdata} (postmaster pid ${pid}); stop it first (pg_ctl -D ${pgdata} stop)`)
  }

  const started = startedAt === undefined ? '' : `, started ${new Date(startedAt).toISOString()}`
  throw new UsageError(
    `${file} stands (postmaster pid ${pid ?? 'unreadable'}${started}) and no such process runs here, but PostgreSQL may be running on ${pgdata} in another container or pid namespace that shares the volume: stop it there first. ` +
      `If no server runs on it (it crashed or was killed, which leaves the file), remove ${file} and run the restore again`,
  )
}

/**
 * The staging directory's name starts with PostgreSQL's temporary-file prefix (`pgsql_tmp`), which
 * pg_basebackup (and pgBackRest, and pg_rewind) skip: a restore killed before its swap leaves the
 * partly extracted backup beside the untouched old cluster, and if that cluster is started again
 * instead of restored, its base backups would otherwise carry the leftover (checked by
 * base-restore-crash.e2e with the real pg_basebackup).
 */
export const STAGING_PREFIX = 'pgsql_tmp.dbb-restore-'
/** Also what an older dbb named it, recognized when telling an interrupted restore apart. */
const STAGING_PREFIXES = [STAGING_PREFIX, '.dbb-restore-']

/** A staging directory inside pgdata, so moving the extracted files into place is a rename on one filesystem. */
export async function createStagingDirectory(pgdata: string): Promise<string> {
  await fs.mkdir(pgdata, {recursive: true, mode: 0o700})
  return fs.mkdtemp(path.join(pgdata, STAGING_PREFIX))
}

const RECOVERY_SETTING = /^\s*(restore_command|recovery_target\w*)\s*=/
// Only the archive_mode line an earlier dbb restore wrote (marked), never one the operator set with ALTER SYSTEM.
const DBB_ARCHIVE_MODE = /^\s*archive_mode\s*=.*# dbb restore/
const ARCHIVE_OFF_MARK = '# dbb restore: a restored cluster does not archive unless restored with --archive'

/**
 * Written last in postgresql.auto.conf, so it wins over postgresql.conf and any earlier ALTER SYSTEM.
 * `off`: the restored cluster does not archive (archive_mode = off), so a drill that promotes
 * never writes its new timeline into the archive it was restored from (it would become what a
 * later "replay everything" restore follows). `inherited`: the backup's archive settings stay, for a
 * disaster recovery where the restored cluster is the new primary (`--archive`).
 */
export type RestoredArchiving = 'off' | 'inherited'

/**
 * recovery.signal plus restore_command, the target and `recovery_target_action = 'promote'` in
 * postgresql.auto.conf (read after postgresql.conf, so these win). Recovery settings a backup of an
 * earlier restored cluster still carries are commented out: an old target must not apply now.
 */
export async function writeRecoveryConfig(
  pgdata: string,
  options: {restoreCommand: string; target?: RecoveryTarget; targetTimeline?: string; archiving: RestoredArchiving; backupId: string},
): Promise<void> {
  const version = Number.parseInt(await fs.readFile(path.join(pgdata, 'PG_VERSION'), 'utf8'), 10)
  if (!(version >= 12)) {
    throw new OperationError(`the backup is of PostgreSQL ${version}; point-in-time restore by dbb needs PostgreSQL 12 or newer (recovery.signal)`)
  }

  const autoConf = path.join(pgdata, 'postgresql.auto.conf')
  const existing = await fs.readFile(autoConf, 'utf8').catch(() => '')
  const kept = existing
    .split('\n')
    .map((line) => (RECOVERY_SETTING.test(line) || DBB_ARCHIVE_MODE.test(line) ? `# replaced by dbb restore: ${line}` : line))
    .join('\n')
  const settings: [string, string][] = [['restore_command', options.restoreCommand]]
  if (options.target) {
    settings.push([`recovery_target_${options.target.kind}`, options.target.value], ['recovery_target_action', 'promote'])
  }

  if (options.targetTimeline !== undefined) settings.push(['recovery_target_timeline', options.targetTimeline])
  const block = [
    `# dbb restore --type base ${options.backupId} at ${new Date().toISOString()}`,
    ...settings.map(([key, value]) => `${key} = '${value.replace(/'/g, "''")}'`),
    ...(options.archiving === 'off' ? [`archive_mode = 'off'  ${ARCHIVE_OFF_MARK}`] : []),
  ].join('\n')
  const owner = await fs.stat(path.join(pgdata, 'PG_VERSION'))
  await writeOwnedFile(autoConf, `${kept.replace(/\n*$/, '\n')}${block}\n`, owner)
  await writeOwnedFile(path.join(pgdata, 'recovery.signal'), '', owner)
}

async function writeOwnedFile(file: string, content: string, owner: {uid: number; gid: number}): Promise<void> {
  await fs.writeFile(file, content, {mode: 0o600})
  if (process.getuid?.() === 0) await fs.chown(file, owner.uid, owner.gid)
}

/** Quotes one shell word only when it needs it, so a plain command stays readable in postgresql.auto.conf. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

/**
 * `set -- fetch <storage flags> %f %p; DBB_NODE=<node>; DBB_WAL=<bin/dbb-wal>; command . <bin/dbb-wal>;
 * exit 200`: the restore_command dbb restore writes. bin/dbb-wal (POSIX sh) hands over a segment
 * the prefetcher queued without starting Node and execs `<node> bin/run.js wal fetch …` for
 * everything else, so the exit-code contract is the one of `dbb wal fetch`. It is sourced into the
 * sh PostgreSQL starts rather than run by it: one program less per segment, 3 ms of the 13 a call
 * took under replay (BENCHMARKS.md, "Session 13: replay"). A plain `.` of a script that is missing
 * or unreadable (dbb moved or upgraded, the server in another container) exits the sh with 2, which
 * PostgreSQL reads as "not in archive" and ends recovery there (and a directory in its place is
 * sourced as nothing, exit 0 without a file: the same). `command .` returns instead, and since the
 * script never returns (it exits or execs Node), `; exit 200` makes any return fatal, as exec-ing a
 * missing script (127) always was.
 */
export function walForegroundFetchCommand(node: string, foreground: string, storageArgs: string[]): string {
  const script = shellWord(foreground)
  return `set -- ${['fetch', ...storageArgs].map((word) => shellWord(word)).join(' ')} %f %p; DBB_NODE=${shellWord(node)}; DBB_WAL=${script}; command . ${script}; exit ${EXIT_WAL_FETCH_FATAL}`
}
