import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {pipeline} from 'node:stream/promises'

import {spawnChild} from '../backup/child-process'
import {hashTap} from '../backup/hash-tap'
import {requireCodec} from '../compress/codec-streams'
import {createObjectDecoder, prepareDecryption} from '../encrypt/age'
import {codecOf} from '../compress/codecs'
import {BackupMetadata, damagedBackupError, newestFirst, resolveBackup, restoreSupport, scanBackups} from '../backup/metadata'
import {NotFoundError, OperationError, UsageError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {syncDirectory} from '../sync-directory'
import {isLsn, parseLsn} from '../wal/segments'
import {CONTROL_FILE, RestoredArchiving, checkDataDirectory, createStagingDirectory, writeRecoveryConfig} from './recovery-config'

/** Where replay stops; without one, PostgreSQL replays every archived WAL file and promotes. */
export type RecoveryTarget = {kind: 'time'; value: string; at: Date} | {kind: 'lsn'; value: string} | {kind: 'name'; value: string}

const TIMESTAMP = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)\s*(Z|[+-]\d{2}(?::?\d{2})?)$/i

/** The three --target-* flags to one target; at most one, each validated (times need a zone: the server's may differ from ours). */
export function parseRecoveryTarget(flags: {time?: string; lsn?: string; name?: string}): RecoveryTarget | undefined {
  const given = Object.entries(flags).filter(([, value]) => value !== undefined)
  if (given.length > 1) {
    throw new UsageError(`choose one of --target-time, --target-lsn, --target-name (got ${given.map(([key]) => `--target-${key}`).join(' and ')})`)
  }
  if (flags.time !== undefined) {
    const match = TIMESTAMP.exec(flags.time.trim())
    const at = match ? new Date(`${match[1]}T${match[2]}${normalizeOffset(match[3])}`) : undefined
    if (!match || !at || Number.isNaN(at.getTime())) {
      throw new UsageError(`--target-time: "${flags.time}" is not a timestamp with a time zone (example: --target-time "2026-11-21 14:30:00+00")`)
    }

    // PostgreSQL gets the text as given (microseconds included); JavaScript's Date only picks the backup.
    return {kind: 'time', value: flags.time.trim(), at}
  }

  if (flags.lsn !== undefined) {
    if (!isLsn(flags.lsn)) throw new UsageError(`--target-lsn: "${flags.lsn}" is not a WAL location (example: --target-lsn 0/3000060)`)
    return {kind: 'lsn', value: flags.lsn.trim().toUpperCase()}
  }

  if (flags.name !== undefined) {
    if (!/^[^'\\\0]{1,63}$/.test(flags.name)) {
      throw new UsageError(`--target-name: must be a restore point name of 1 to 63 characters without quotes (example: --target-name before_migration)`)
    }

    return {kind: 'name', value: flags.name}
  }

  return undefined
}

/**
 * --target-timeline: `latest` (PostgreSQL's default: follow the newest timeline in the archive),
 * `current` (stay on the base backup's timeline), or a timeline number. A drill's timeline in the
 * archive makes `latest` follow it: `current` or a number pins production's.
 */
export function parseTargetTimeline(text: string | undefined): string | undefined {
  if (text === undefined) return undefined
  const value = text.trim().toLowerCase()
  if (value === 'latest' || value === 'current') return value
  if (/^[1-9]\d{0,9}$/.test(value) && Number(value) <= 0xffff_ffff) return String(Number(value))
  throw new UsageError(`--target-timeline: "${text}" is not a timeline (a number such as 2, or latest, or current)`)
}

function normalizeOffset(offset: string): string {
  if (/^z$/i.test(offset)) return 'Z'
  const digits = offset.slice(1).replace(':', '')
  return `${offset[0]}${digits.slice(0, 2)}:${digits.slice(2).padEnd(2, '0')}`
}

/** When a base backup finished: a target time before this cannot be reached from it. */
function finishedAt(backup: BackupMetadata): number {
  return Date.parse(backup.createdAt) + backup.durationMs
}

/**
 * `latest` is the newest base backup that can reach the target: one that finished before a target
 * time, or stopped at or before a target LSN. A named restore point cannot be placed without
 * reading WAL, so it takes the newest.
 */
export async function selectBaseBackup(
  storage: StorageBackend,
  reference: string,
  options: {prefix?: string; target?: RecoveryTarget},
): Promise<BackupMetadata> {
  if (reference !== 'latest') {
    const backup = await resolveBackup(storage, reference, {prefix: options.prefix})
    const unsupported = restoreSupport(backup)
    if (unsupported) throw new OperationError(unsupported)
    if (backup.type !== 'base') throw new UsageError(`${backup.id} is a ${backup.type} backup; restore it without --type base`)
    return backup
  }

  const {backups, damaged} = await scanBackups(storage, {prefix: options.prefix, type: 'base'})
  const {target} = options
  const usable = backups.filter((backup) => {
    if (target?.kind === 'time') return finishedAt(backup) <= target.at.getTime()
    if (target?.kind === 'lsn') return backup.stopLsn !== undefined && parseLsn(backup.stopLsn) <= parseLsn(target.value)
    return true
  })
  // A damaged base backup newer than the choice might have been the right one: say so rather than silently restore an older one.
  const couldReach = (entry: {createdAt: string}) => target?.kind !== 'time' || Date.parse(entry.createdAt) <= target.at.getTime()
  const newerDamaged = damaged.find((entry) => couldReach(entry) && (!usable[0] || newestFirst(entry, usable[0]) < 0))
  if (newerDamaged) throw damagedBackupError(newerDamaged, `base backup ${newerDamaged.id}, newer than any usable one,`)
  if (usable.length > 0) return usable[0]
  if (backups.length === 0) throw new NotFoundError(`no base backups found in ${storage.location} (take one with: dbb backup run --type base)`)
  const oldestEnd = new Date(finishedAt(backups.at(-1)!)).toISOString()
  throw new NotFoundError(`no base backup in ${storage.location} ended before the target ${target?.value}; the oldest ended at ${oldestEnd}`)
}

export interface BaseRestoreOptions {
  reference: string
  pgdata: string
  /** Replace the contents of a non-empty directory (only after the backup has been extracted and verified). */
  force?: boolean
  target?: RecoveryTarget
  /** recovery_target_timeline, already validated (parseTargetTimeline); PostgreSQL's default (latest) when absent. */
  targetTimeline?: string
  /** Whether the restored cluster archives into the location again; `off` unless the operator says so. */
  archiving: RestoredArchiving
  /** The restore_command PostgreSQL runs to read archived WAL, e.g. `dbb wal fetch %f %p`. */
  restoreCommand: string
  prefix?: string
  logger: Logger
  signal?: AbortSignal
  onProgress?: (bytes: number) => void
  /** AGE_IDENTITY_FILE: an encrypted base backup (id ending in .age) is decrypted with it, proven before pgdata is touched. */
  identityFile?: string
}

export interface BaseRestoreOutcome {
  id: string
  pgdata: string
  target: {kind: string; value: string} | null
  targetTimeline: string | null
  archiving: RestoredArchiving
  restoreCommand: string
  sizeBytes: number
  sha256: string
  durationMs: number
}

/**
 * Restores a base backup into `pgdata` for point-in-time recovery (PostgreSQL 12+). The tar is
 * streamed from storage through sha256 and gunzip into `tar -x`, into a staging directory inside
 * `pgdata`; only once the stream's sha256 matches the sidecar does it replace what was there.
 * Then recovery.signal and restore_command + target (postgresql.auto.conf) make the next start
 * of PostgreSQL replay archived WAL up to the target and promote.
 */
export async function restoreBaseBackup(storage: StorageBackend, options: BaseRestoreOptions): Promise<BaseRestoreOutcome> {
  const started = Date.now()
  const pgdata = path.resolve(options.pgdata)
  await checkDataDirectory(pgdata, {force: Boolean(options.force)})
  const backup = await selectBaseBackup(storage, options.reference, {prefix: options.prefix, target: options.target})
  await requireCodec(codecOf(backup), 'decompress')
  // Encrypted: the identity must open it before the staging directory is made.
  const identityFile = await prepareDecryption(storage, backup.id, options.identityFile, options.signal)
  const log = options.logger.child({backupId: backup.id, pgdata})
  log.info({event: 'restore.started', type: 'base', target: options.target?.value}, `restoring base backup ${backup.id} into ${pgdata}`)

  const staging = await createStagingDirectory(pgdata)
  try {
    const {sizeBytes, sha256} = await extractVerified(storage, backup, staging, {...options, identityFile})
    // The cluster is made whole in the staging directory (recovery settings included) before any
    // of it enters pgdata: a restored cluster without them would start as a primary at the backup's
    // state, archiving into the archive it was restored from.
    await writeRecoveryConfig(staging, {
      restoreCommand: options.restoreCommand,
      target: options.target,
      targetTimeline: options.targetTimeline,
      archiving: options.archiving,
      backupId: backup.id,
    })
    log.debug({event: 'restore.staged', type: 'base'}, 'base backup extracted, verified and configured in the staging directory')
    await replaceContents(pgdata, staging, log)
    const outcome: BaseRestoreOutcome = {
      id: backup.id,
      pgdata,
      target: options.target ? {kind: options.target.kind, value: options.target.value} : null,
      targetTimeline: options.targetTimeline ?? null,
      archiving: options.archiving,
      restoreCommand: options.restoreCommand,
      sizeBytes,
      sha256,
      durationMs: Date.now() - started,
    }
    log.info({event: 'restore.succeeded', type: 'base', durationMs: outcome.durationMs}, 'base backup restored; start PostgreSQL to replay WAL')
    return outcome
  } catch (error) {
    log.error({event: 'restore.failed', type: 'base', error: errorMessage(error)}, 'base restore failed')
    throw error instanceof Error && 'exitCode' in error ? error : new OperationError(`restore of ${backup.id} failed: ${errorMessage(error)}`, {cause: error})
  } finally {
    await fs.rm(staging, {recursive: true, force: true})
  }
}

/** storage → sha256 tap → [age -d] → decompressor (the sidecar's codec) → tar -x, then the bytes read must be exactly the sidecar's. */
async function extractVerified(
  storage: StorageBackend,
  backup: BackupMetadata,
  directory: string,
  options: Pick<BaseRestoreOptions, 'signal' | 'onProgress' | 'identityFile'>,
): Promise<{sizeBytes: number; sha256: string}> {
  const tap = hashTap(options.onProgress)

  // As root, tar keeps the owner recorded by pg_basebackup (the server's user), which PostgreSQL needs.
  const tar = spawnChild('tar', ['-x', '-f', '-', '-C', directory], {stdio: ['pipe', 'ignore', 'pipe'], signal: options.signal})
  let tarErrors = ''
  tar.stderr.setEncoding('utf8').on('data', (text: string) => (tarErrors = (tarErrors + text).slice(-4096)))
  const exited = new Promise<number | null>((resolve) => {
    tar.on('error', (error: NodeJS.ErrnoException) => (tarErrors ||= error.code === 'ENOENT' ? 'tar not found on PATH' : error.message))
    tar.on('close', (code) => resolve(code))
  })
  try {
    await pipeline(await storage.get(backup.id, {signal: options.signal}), tap.stage, createObjectDecoder(backup.id, codecOf(backup), options.identityFile), tar.stdin, {signal: options.signal})
  } catch (error) {
    tar.kill('SIGKILL')
    await exited
    throw new OperationError(`reading ${backup.id} failed: ${tarErrors.trim() || errorMessage(error)}`)
  }

  const code = await exited
  if (code !== 0) throw new OperationError(`tar could not extract ${backup.id} (exit code ${code}): ${tarErrors.trim().split('\n').slice(-3).join(' | ')}`)
  const {sizeBytes} = tap
  const sha256 = tap.sha256()
  if (sizeBytes !== backup.sizeBytes || sha256 !== backup.sha256) {
    throw new OperationError(
      `integrity check failed for ${backup.id}: read ${sizeBytes} bytes with sha256 ${sha256}, its metadata says ${backup.sizeBytes} bytes ` +
        `with sha256 ${backup.sha256}; the data directory was left as it was`,
    )
  }

  return {sizeBytes, sha256}
}

/**
 * Replaces `pgdata`'s contents by the staged cluster so that PostgreSQL can start only on one of
 * the two whole: `global/pg_control`, without which it refuses to start, is the first file removed
 * and the last put in place (pgBackRest restores it last for the same reason). A restore killed in
 * between leaves a directory PostgreSQL will not start, never a half-deleted old cluster or a new
 * one without its recovery settings; restoring again (`--force`) replaces it.
 */
async function replaceContents(pgdata: string, staging: string, log: Logger): Promise<void> {
  const stagingName = path.basename(staging)
  const stagedControl = path.join(staging, CONTROL_FILE)
  const owner = await fs.stat(path.join(staging, 'PG_VERSION')).catch(() => {
    throw new OperationError('the backup holds no PG_VERSION file: it is not a PostgreSQL data directory')
  })
  await fs.access(stagedControl).catch(() => {
    throw new OperationError(`the backup holds no ${CONTROL_FILE}: it is not a PostgreSQL data directory`)
  })
  // Parked outside global/, so moving global/ into place does not bring it in early.
  const parkedControl = path.join(staging, '.pg_control')
  await fs.rename(stagedControl, parkedControl)

  await fs.rm(path.join(pgdata, CONTROL_FILE), {force: true})
  await syncDirectory(path.join(pgdata, 'global')).catch(() => {})
  log.debug({event: 'restore.old_unstartable', type: 'base'}, `removed ${CONTROL_FILE}: from here on PostgreSQL cannot start on ${pgdata} until the restore ends`)
  for (const entry of await fs.readdir(pgdata)) {
    if (entry !== stagingName) await fs.rm(path.join(pgdata, entry), {recursive: true, force: true})
  }

  for (const entry of await fs.readdir(staging)) {
    if (entry !== path.basename(parkedControl)) await fs.rename(path.join(staging, entry), path.join(pgdata, entry))
  }

  // The directory itself must belong to the server's user with mode 0700, like the files tar
  // restored: set before the cluster can start.
  if (process.getuid?.() === 0) await fs.chown(pgdata, owner.uid, owner.gid)
  await fs.chmod(pgdata, 0o700)
  await syncDirectory(pgdata)
  await syncDirectory(path.join(pgdata, 'global'))
  log.debug({event: 'restore.swapped', type: 'base'}, 'every file but pg_control is in place')
  await fs.rename(parkedControl, path.join(pgdata, CONTROL_FILE))
  await syncDirectory(path.join(pgdata, 'global'))
}

