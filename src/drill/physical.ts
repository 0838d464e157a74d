import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {pipeline} from 'node:stream/promises'
import {setTimeout as sleep} from 'node:timers/promises'
import {Client} from 'pg'

import {captureContents} from '../backup/contents-record'
import {childEnvironment, spawnChild} from '../backup/child-process'
import {hashTap} from '../backup/hash-tap'
import type {BackupMetadata} from '../backup/metadata'
import {createDecompressor, requireCodec} from '../compress/codec-streams'
import {codecOf} from '../compress/codecs'
import {AbortedError, OperationError, errorMessage} from '../errors'
import type {Logger} from '../logger'
import {keepTouched} from '../leftover-owner'
import {RecoveryTarget, restoreBaseBackup, selectBaseBackup} from '../restore/base'
import type {StorageBackend} from '../storage/contract'
import {VERSION} from '../version'
import {parseTimelineHistory, segmentNumber, timelineOfName} from '../wal/chain'
import {WAL_PREFIX, segmentNameForLsn, walFileKind, walNameOfKey} from '../wal/segments'
import {
  PrivateDirectory,
  createPrivateDirectory,
  destroyPrivateServer,
  freePort,
  preparePrivateServer,
  runningPostmaster,
  serverLogTail,
  serverUser,
  startPrivateServer,
  sweepLeftovers,
} from './private-server'
import {DrillResult, PhysicalDrillDetails, writeDrillResult} from './result'
import {findServerBinaries, majorVersion} from './server-binaries'

export interface PhysicalDrillDependencies {
  storage: StorageBackend
  namePrefix: string
  logger: Logger
  /** The restore_command the private server fetches archived WAL with (`<this dbb> wal fetch <storage flags> %f %p`). */
  restoreCommand: string
  /** Variables the restore_command needs to reach the storage (the backend's settings, secrets included): the private server's environment. */
  storageEnvironment: Record<string, string>
  /** DRILL_OS_USER: the user the server runs as when dbb is root. */
  osUser: string
  /** A role that exists in the backed-up cluster (DB_USER): the first connection, which finds the bootstrap superuser. */
  knownRole: string
}

export interface PhysicalDrillOptions {
  reference: string
  target?: RecoveryTarget
  signal?: AbortSignal
  onBackup?: (backup: BackupMetadata) => void
  onProgress?: (bytes: number) => void
}

type Verdict = Pick<DrillResult, 'status' | 'differences' | 'error' | 'physical'>

/**
 * One physical restore drill of a base backup:
 *
 *   resolve → find server binaries of the backup's major version → remove what killed drills left
 *   → list the WAL archive (where replay must reach) → restore into a marked private directory
 *   with the code of `dbb restore --type base` (sha256 checked; archive_mode off: the drill never
 *   writes into the archive) → start a private server on a unix socket only → wait for recovery
 *   to end and the server to promote → check that replay reached the newest archived segment, and
 *   that every database accepts connections and has readable tables (exact row counts) → stop the
 *   server, remove the directory → write `<id>.drill.json`.
 *
 * "failed" means the backup or its WAL is at fault: the bytes do not match, the server cannot
 * recover (WAL missing before consistency, a damaged segment that aborts recovery), replay stopped
 * before the end of the archive (a missing or damaged segment: named), or a database cannot be
 * read. The drill's surroundings failing (no binaries, interrupted, storage unreachable before the
 * server starts) throw: no verdict, no sidecar.
 */
export async function runPhysicalDrill(deps: PhysicalDrillDependencies, options: PhysicalDrillOptions): Promise<DrillResult> {
  const {storage, logger} = deps
  const {signal} = options
  const backup = await selectBaseBackup(storage, options.reference, {prefix: deps.namePrefix, target: options.target})
  await requireCodec(codecOf(backup), 'decompress')
  options.onBackup?.(backup)
  const log = logger.child({backupId: backup.id, drill: 'physical'})
  const startedAt = new Date()
  const major = majorVersion(backup.pgVersion)
  if (major === undefined) throw new OperationError(`${backup.id} records no usable server version ("${backup.pgVersion}"); a physical drill needs it to pick server binaries`)
  const binaries = await findServerBinaries(major)
  if (!binaries.binDir) {
    const others = binaries.found.length > 0 ? ` (found PostgreSQL ${[...new Set(binaries.found.map((entry) => entry.major))].join(', ')} only: a data directory starts only with its own major version)` : ''
    const bytes = await verifyBytes(storage, backup, signal)
    const checked = bytes.ok
      ? `checked what it can without them: ${backup.id} reads back with its recorded sha256 and is a readable tar`
      : `and the backup's bytes are bad: ${bytes.error}`
    if (!bytes.ok) {
      return finish(storage, log, backup, startedAt, {status: 'failed', differences: [], error: bytes.error}, {restoreMs: 0, server: 'none (no server binaries)', scratch: 'none'})
    }

    throw new OperationError(`physical drill needs PostgreSQL ${major} server binaries${others}: apt-get install postgresql-${major}; ${checked}; no drill result was recorded`)
  }

  const binDir = binaries.binDir
  const user = await serverUser(deps.osUser)
  await sweepLeftovers(log)
  // Where replay must reach: the newest segment archived now (segments archived while the drill runs do not count).
  const archiveEnd = await newestArchivedSegment(storage, backup)
  const port = await freePort()
  // Made right before the try whose finally removes it: nothing in between can throw.
  const directory = await createPrivateDirectory(user, backup.id)
  // A drill in a sibling container sharing TMPDIR cannot see this process: it goes by the marker's heartbeat.
  const stopTouching = keepTouched(directory.marker)
  const server = `private PostgreSQL ${major} on ${directory.root} (unix socket only)`
  log.info({event: 'drill.started', directory: directory.root, binDir, archiveEnd}, `physical drill of ${backup.id} in ${directory.root}`)
  let verdict: Verdict
  let restoreMs = 0
  let removed = false
  try {
    const restoreStarted = Date.now()
    await restoreBaseBackup(storage, {
      reference: backup.id,
      pgdata: directory.dataDir,
      target: options.target,
      archiving: 'off',
      restoreCommand: deps.restoreCommand,
      prefix: deps.namePrefix,
      logger: log,
      signal,
      onProgress: options.onProgress,
    }).catch((error: unknown) => {
      if (signal?.aborted) throw new AbortedError('drill interrupted')
      // The bytes are the backup's: a sha256 or tar failure is its verdict; storage unreachable is not.
      if (/integrity check failed|tar could not extract|no PG_VERSION/.test(errorMessage(error))) return {failed: errorMessage(error)}
      throw error
    }).then((outcome) => {
      if (outcome && 'failed' in outcome) throw new BackupFault(outcome.failed)
    })
    const restoredMs = Date.now() - restoreStarted
    await preparePrivateServer(directory, user, port)
    const replayStarted = Date.now()
    const env = {...childEnvironment({LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8'}), ...deps.storageEnvironment}
    await startPrivateServer(binDir, user, directory, env)
    const recovered = await waitForPromotion(directory, port, deps.knownRole, user.name, signal)
    restoreMs = Date.now() - restoreStarted
    const details: PhysicalDrillDetails = {pgMajor: major, binDir, restoreMs: restoredMs, replayMs: Date.now() - replayStarted, archiveEnd: archiveEnd ?? null, walEnd: null, databases: []}
    if ('error' in recovered) {
      verdict = {status: 'failed', differences: [], error: recovered.error, physical: details}
    } else {
      const end = await endOfRecovery(directory)
      details.walEnd = end?.lsn ?? null
      const gap = replayGap(backup, end, archiveEnd, options.target)
      const databases = await checkDatabases(directory, port, recovered.superuser)
      details.databases = databases.map(({name, tables, rows}) => ({name, tables, rows}))
      const differences = databases.filter((db) => db.error).map((db) => ({kind: 'database', object: db.name, expected: 'connectable, every table readable', actual: db.error!}))
      verdict = gap
        ? {status: 'failed', differences, error: gap, physical: details}
        : {status: differences.length === 0 ? 'passed' : 'failed', differences, physical: details}
    }
  } catch (error) {
    if (error instanceof BackupFault) {
      verdict = {status: 'failed', differences: [], error: error.message}
    } else {
      removed = await destroyPrivateServer(binDir, user, directory, log)
      const fate = removed ? `${directory.root} was removed` : `${directory.root} is removed by the next drill`
      log.error({event: 'drill.aborted', error: errorMessage(error)}, `physical drill of ${backup.id} did not finish: ${errorMessage(error)}`)
      if (signal?.aborted) throw new AbortedError(`drill interrupted; its server was stopped and ${fate}`)
      throw error
    }
  } finally {
    if (!removed) removed = await destroyPrivateServer(binDir, user, directory, log)
    stopTouching()
  }

  if (signal?.aborted) throw new AbortedError('drill interrupted; no result was recorded')
  return finish(storage, log, backup, startedAt, verdict, {restoreMs, server, scratch: directory.dataDir})
}

/** A failure that is the backup's (bytes, contents): a verdict, not an error of the drill. */
class BackupFault extends Error {}

async function finish(
  storage: StorageBackend,
  log: Logger,
  backup: BackupMetadata,
  startedAt: Date,
  verdict: Verdict,
  where: {restoreMs: number; server: string; scratch: string},
): Promise<DrillResult> {
  const finishedAt = new Date()
  const result: DrillResult = {
    backupId: backup.id,
    checked: 'replay',
    ...verdict,
    restoreMs: where.restoreMs,
    durationMs: finishedAt.getTime() - startedAt.getTime(),
    sizeBytes: backup.sizeBytes,
    scratchDatabase: where.scratch,
    server: where.server,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    dbbVersion: VERSION,
  }
  await writeDrillResult(storage, result).catch((error: unknown) => {
    throw new OperationError(`the drill ${result.status}, but its result could not be stored as ${backup.id}.drill.json: ${errorMessage(error)}`)
  })
  if (result.status === 'passed') log.info({event: 'drill.passed', restoreMs: result.restoreMs, physical: result.physical}, `physical drill of ${backup.id} passed`)
  else log.error({event: 'drill.failed', error: result.error, differences: result.differences}, `physical drill of ${backup.id} failed: ${result.error ?? ''}`)
  return result
}

/** sha256 and a tar listing of the backup, streamed (no server binaries needed). */
async function verifyBytes(storage: StorageBackend, backup: BackupMetadata, signal?: AbortSignal): Promise<{ok: true} | {ok: false; error: string}> {
  const tap = hashTap()
  const tar = spawnChild('tar', ['-t', '-f', '-'], {stdio: ['pipe', 'ignore', 'pipe'], signal})
  let tarErrors = ''
  tar.stderr.setEncoding('utf8').on('data', (text: string) => (tarErrors = (tarErrors + text).slice(-2048)))
  const exited = new Promise<number | null>((resolve) => {
    tar.on('error', () => {})
    tar.on('close', (code) => resolve(code))
  })
  try {
    await pipeline(await storage.get(backup.id, {signal}), tap.stage, createDecompressor(codecOf(backup)), tar.stdin, {signal})
  } catch (error) {
    tar.kill('SIGKILL')
    await exited
    if (signal?.aborted) throw new AbortedError('drill interrupted')
    return {ok: false, error: `${backup.id} cannot be read as a compressed tar: ${tarErrors.trim() || errorMessage(error)}`}
  }

  const code = await exited
  if (code !== 0) return {ok: false, error: `${backup.id} is not a readable tar (tar exit ${code}): ${tarErrors.trim()}`}
  if (tap.sizeBytes !== backup.sizeBytes || tap.sha256() !== backup.sha256) {
    return {ok: false, error: `integrity check failed for ${backup.id}: read ${tap.sizeBytes} bytes with sha256 ${tap.sha256()}, its metadata says ${backup.sizeBytes} bytes with sha256 ${backup.sha256}`}
  }

  return {ok: true}
}

/** The newest WAL segment in the archive on the backup's timeline or a later one (by position in the WAL stream). */
async function newestArchivedSegment(storage: StorageBackend, backup: BackupMetadata): Promise<string | undefined> {
  const segmentSize = backup.walSegmentSize ?? 16 * 1024 * 1024
  const timeline = backup.timeline ?? 1
  let newest: {name: string; number: bigint} | undefined
  for await (const {key} of storage.list(WAL_PREFIX)) {
    const name = walNameOfKey(key)
    if (!name || walFileKind(name) !== 'segment' || timelineOfName(name) < timeline) continue
    const number = segmentNumber(name, segmentSize)
    if (!newest || number > newest.number) newest = {name, number}
  }

  return newest?.name
}

/** Where recovery ended: the switch point in the newest timeline history file the promotion wrote into pg_wal. */
async function endOfRecovery(directory: PrivateDirectory): Promise<{timeline: number; lsn: string; value: bigint} | undefined> {
  const walDir = path.join(directory.dataDir, 'pg_wal')
  const histories = (await fs.readdir(walDir)).filter((name) => /^[0-9A-F]{8}\.history$/.test(name)).sort()
  const newest = histories.at(-1)
  if (!newest) return undefined
  const switches = parseTimelineHistory(await fs.readFile(path.join(walDir, newest), 'utf8'))
  const last = switches.at(-1)
  if (!last) return undefined
  const value = last.switchLsn
  return {timeline: last.parent, value, lsn: `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffff_ffffn).toString(16).toUpperCase()}`}
}

/**
 * Without a target, replay must reach the newest segment the archive held when the drill began:
 * ending earlier means a segment is missing or damaged, and recovery promoted at the gap — a real
 * restore would silently lose everything after it. The segment where replay ended is named.
 */
function replayGap(backup: BackupMetadata, end: {timeline: number; value: bigint; lsn: string} | undefined, archiveEnd: string | undefined, target?: RecoveryTarget): string | undefined {
  if (target || !archiveEnd) return undefined
  const segmentSize = backup.walSegmentSize ?? 16 * 1024 * 1024
  if (!end) return 'the server promoted without writing a timeline history file: where replay ended is unknown'
  const reached = end.value / BigInt(segmentSize)
  if (reached >= segmentNumber(archiveEnd, segmentSize)) return undefined
  const stoppedIn = segmentNameForLsn(end.timeline, end.value, segmentSize)
  return (
    `replay ended at ${end.lsn} in WAL segment ${stoppedIn}, but the archive holds WAL up to ${archiveEnd}: ${stoppedIn} is missing or damaged, ` +
    `and a restore from ${backup.id} loses every change after ${end.lsn}`
  )
}

/** Polls the private server until it has promoted (pg_is_in_recovery() false), died, or paused; returns the bootstrap superuser. */
async function waitForPromotion(directory: PrivateDirectory, port: number, knownRole: string, osUser: string, signal?: AbortSignal): Promise<{superuser: string} | {error: string}> {
  const started = Date.now()
  // Any existing role connects (trust on the private socket); the first finds the bootstrap superuser. initdb names it after the OS user, usually postgres.
  const roles = [...new Set([knownRole, 'postgres', osUser])]
  for (;;) {
    if (signal?.aborted) throw new AbortedError('drill interrupted')
    const postmaster = await runningPostmaster(directory)
    // postmaster.pid appears once the postmaster runs: on a loaded machine that may take seconds.
    if (postmaster === undefined && Date.now() - started > 15_000) {
      return {error: `the server stopped during recovery: ${await serverLogTail(directory)}`}
    }

    if (postmaster !== undefined) {
      let missingRoles = 0
      let state: {recovering: boolean; paused: string; superuser: string} | undefined
      for (const role of roles) {
        state = await query(directory, port, role, 'template1', async (client) => {
          const {rows} = await client.query<{recovering: boolean; paused: string; superuser: string}>(
            `SELECT pg_is_in_recovery() AS recovering, CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END AS paused, (SELECT rolname FROM pg_roles WHERE oid = 10) AS superuser`,
          )
          return rows[0]
        }).catch((error: unknown) => {
          if (/role .* does not exist/.test(errorMessage(error))) missingRoles++
          return undefined
        })
        if (state) break
      }

      // The server answers, but knows none of the names: no verdict on the backup, and no point waiting.
      if (missingRoles === roles.length) {
        throw new OperationError(`the drill's server runs, but none of the roles ${roles.join(', ')} exists in the restored cluster to connect as; set DB_USER to a role of the backed-up cluster`)
      }

      if (state && !state.recovering) return {superuser: state.superuser}
      if (state && state.paused !== 'not paused') return {error: `recovery paused (${await serverLogTail(directory)})`}
    }

    await sleep(250, undefined, {signal}).catch(() => {})
  }
}

async function query<T>(directory: PrivateDirectory, port: number, user: string, database: string, work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({host: directory.root, port, user, database, connectionTimeoutMillis: 5000})
  client.on('error', () => {})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/** Every database that allows connections: connect, read the catalog, count every table's rows exactly (reads every heap page). */
async function checkDatabases(directory: PrivateDirectory, port: number, superuser: string): Promise<{name: string; tables: number; rows: number; error?: string}[]> {
  const list = async (client: Client) =>
    (await client.query<{datname: string}>('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname')).rows.map((row) => row.datname)
  // template1 exists in every cluster that was not tampered with; postgres may have been dropped.
  const names = await query(directory, port, superuser, 'template1', list)
  const results: {name: string; tables: number; rows: number; error?: string}[] = []
  for (const name of names) {
    try {
      const contents = await query(directory, port, superuser, name, async (client) => {
        await client.query('SELECT count(*) FROM pg_catalog.pg_class')
        return captureContents(client, {checksums: false})
      })
      results.push({name, tables: contents.tables.length, rows: contents.tables.reduce((sum, table) => sum + table.rows, 0)})
    } catch (error) {
      results.push({name, tables: 0, rows: 0, error: errorMessage(error)})
    }
  }

  return results
}
