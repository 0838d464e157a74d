import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {runTool, spawnTool, SpawnedTool, toolFailure} from '../backup/child-process'
import type {DatabaseConfig} from '../config'
import {libpqEnvironment} from '../db/connection'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {JobLease, JobLock} from '../server/job-lock'
import type {StorageBackend} from '../storage/contract'
import {pushWal} from './archive'
import {walFileKind} from './segments'

export interface WalStreamerOptions {
  database: DatabaseConfig
  storage: StorageBackend
  /** Replication slot: the server keeps WAL until pg_receivewal has it, so a restart resumes without gaps. */
  slot: string
  /** Where pg_receivewal writes; completed files are uploaded, then removed. Keep it across restarts. */
  spoolDir: string
  logger: Logger
  pollIntervalMs?: number
  restartDelayMs?: number
  /**
   * Replicas: only the holder of this lock streams. The others stand by, trying again every
   * restartDelayMs, and take over when the holder's session ends (it stopped or died).
   */
  lock?: JobLock
  /** ENCRYPTION_RECIPIENTS as serve validated it (a flag or the environment); else pushWal reads the environment. */
  encryptTo?: readonly string[]
}

/** Without WAL_STREAMING_DIR: a directory that survives process restarts, not container rebuilds (hence the setting). */
export function defaultSpoolDir(slot: string): string {
  return path.join(os.tmpdir(), `dbb-wal-spool-${slot}`)
}

export interface WalStreamerStatus {
  running: boolean
  /** streaming: this replica runs pg_receivewal; standby: another replica holds the WAL streaming lock. */
  role: 'streaming' | 'standby'
  uploaded: number
  lastUploaded: string | null
  lastError: string | null
}

/**
 * The alternative to archive_command for a sidecar that cannot change the server's config:
 * `pg_receivewal` streams WAL over the replication protocol into a local spool directory, and each
 * completed file (it renames `.partial` away only once the segment is whole and fsynced) is pushed
 * to storage exactly like `dbb wal push`, then deleted. pg_receivewal is restarted when it exits
 * (network, server restart); the slot makes it resume where it left off.
 */
export class WalStreamer {
  private tool?: SpawnedTool
  private stopping = false
  private uploadTimer?: NodeJS.Timeout
  private restartTimer?: NodeJS.Timeout
  private uploading?: Promise<void>
  private lease?: JobLease
  private standbyTimer?: NodeJS.Timeout
  private readonly status: WalStreamerStatus = {running: false, role: 'standby', uploaded: 0, lastUploaded: null, lastError: null}

  constructor(private readonly options: WalStreamerOptions) {}

  async start(): Promise<void> {
    await fs.mkdir(this.options.spoolDir, {recursive: true, mode: 0o700})
    this.stopping = false
    this.status.running = true
    // Files completed before a previous stop or crash go first (also on a standby: they are this replica's).
    await this.uploadCompleted()
    this.uploadTimer = setInterval(() => void this.uploadCompleted(), this.options.pollIntervalMs ?? 1000)
    if (!this.options.lock) {
      await this.createSlot()
      this.launch()
      return
    }

    // The first attempt's errors (database unreachable, no replication privilege) fail the start, as without replicas.
    if (!(await this.takeOver())) this.standBy()
  }

  /** Streams when this replica gets the lock; false when another holds it. */
  private async takeOver(): Promise<boolean> {
    const lease = await this.options.lock!.tryAcquire()
    if (!lease) return false
    try {
      await this.createSlot()
    } catch (error) {
      await lease.release()
      throw error
    }

    if (this.stopping) {
      await lease.release()
      return true
    }

    this.lease = lease
    this.status.role = 'streaming'
    lease.onLost?.(() => {
      // The lock went with the session: another replica may start streaming now. Stop, and stand by again.
      this.lease = undefined
      this.status.role = 'standby'
      this.options.logger.warn({event: 'wal.streaming_lock_lost'}, 'lost the WAL streaming lock; stopping pg_receivewal and standing by')
      this.tool?.child.kill('SIGTERM')
      if (!this.stopping) this.standBy()
    })
    this.launch()
    return true
  }

  private standBy(): void {
    if (this.stopping) return
    this.status.role = 'standby'
    this.options.logger.info({event: 'wal.streaming_standby', slot: this.options.slot}, 'another dbb replica streams WAL from this slot; standing by')
    const retry = () => {
      this.standbyTimer = setTimeout(async () => {
        if (this.stopping) return
        const streaming = await this.takeOver().catch((error: unknown) => {
          this.status.lastError = errorMessage(error)
          return false
        })
        if (!streaming) retry()
      }, this.options.restartDelayMs ?? 5000)
    }

    retry()
  }

  /** Stops pg_receivewal (it flushes what it has), then uploads every completed file. */
  async stop(): Promise<void> {
    this.stopping = true
    clearInterval(this.uploadTimer)
    clearTimeout(this.restartTimer)
    clearTimeout(this.standbyTimer)
    const tool = this.tool
    if (tool && tool.child.exitCode === null && tool.child.signalCode === null) {
      tool.child.kill('SIGTERM')
      await tool.exited
    }

    await this.uploadCompleted()
    // Only once pg_receivewal has stopped: a standby replica may start streaming now.
    await this.lease?.release()
    this.lease = undefined
    this.status.running = false
  }

  getStatus(): WalStreamerStatus {
    return {...this.status}
  }

  private async createSlot(): Promise<void> {
    const env = libpqEnvironment(this.options.database)
    try {
      await runTool('pg_receivewal', ['--create-slot', '--if-not-exists', `--slot=${this.options.slot}`, '--no-password'], env, {timeout: 30_000})
    } catch (error) {
      const stderr = (error as {stderr?: string}).stderr?.trim()
      throw new Error(`cannot create replication slot "${this.options.slot}": ${stderr || errorMessage(error)}`)
    }
  }

  private launch(): void {
    const args = ['-D', this.options.spoolDir, `--slot=${this.options.slot}`, '--no-loop', '--no-password', '--verbose']
    const tool = spawnTool('pg_receivewal', args, libpqEnvironment(this.options.database))
    this.tool = tool
    this.options.logger.info({event: 'wal.streaming_started', slot: this.options.slot, spoolDir: this.options.spoolDir}, 'pg_receivewal started')
    void tool.exited.then((status) => {
      if (this.stopping || (this.options.lock && !this.lease)) return
      const failure = toolFailure('pg_receivewal', status, tool.stderr())
      this.status.lastError = failure.message
      const delay = this.options.restartDelayMs ?? 5000
      this.options.logger.warn({event: 'wal.streaming_exited', error: failure.message, restartInMs: delay}, 'pg_receivewal exited; restarting')
      this.restartTimer = setTimeout(() => {
        if (!this.stopping) this.launch()
      }, delay)
    })
  }

  /** Serialized: one pass at a time, files in WAL order. A failed upload stays in the spool and is retried next pass. */
  private uploadCompleted(): Promise<void> {
    this.uploading = (this.uploading ?? Promise.resolve()).then(async () => {
      const names = (await fs.readdir(this.options.spoolDir)).filter((name) => walFileKind(name) === 'segment' || walFileKind(name) === 'history').sort()
      for (const name of names) {
        const file = path.join(this.options.spoolDir, name)
        try {
          await pushWal(this.options.storage, file, {logger: this.options.logger, encryptTo: this.options.encryptTo})
          await fs.rm(file, {force: true})
          this.status.uploaded++
          this.status.lastUploaded = name
        } catch (error) {
          this.status.lastError = errorMessage(error)
          this.options.logger.error({event: 'wal.upload_failed', wal: name, error: errorMessage(error)}, 'could not store a streamed WAL file; retrying')
          return
        }
      }
    }).catch((error: unknown) => {
      this.status.lastError = errorMessage(error)
      const details = {event: 'wal.spool_unreadable', spoolDir: this.options.spoolDir, error: errorMessage(error)}
      this.options.logger.error(details, 'cannot read the WAL spool directory')
    })
    return this.uploading
  }
}
