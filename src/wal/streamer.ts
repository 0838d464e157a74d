import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {runTool, spawnTool, SpawnedTool, toolFailure} from '../backup/child-process'
import type {DatabaseConfig} from '../config'
import {libpqEnvironment} from '../db/connection'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
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
  /** ENCRYPTION_RECIPIENTS as serve validated it (a flag or the environment); else pushWal reads the environment. */
  encryptTo?: readonly string[]
}

/** Without WAL_STREAMING_DIR: a directory that survives process restarts, not container rebuilds (hence the setting). */
export function defaultSpoolDir(slot: string): string {
  return path.join(os.tmpdir(), `dbb-wal-spool-${slot}`)
}

export interface WalStreamerStatus {
  running: boolean
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
  private readonly status: WalStreamerStatus = {running: false, uploaded: 0, lastUploaded: null, lastError: null}

  constructor(private readonly options: WalStreamerOptions) {}

  async start(): Promise<void> {
    await fs.mkdir(this.options.spoolDir, {recursive: true, mode: 0o700})
    await this.createSlot()
    this.stopping = false
    this.status.running = true
    // Files completed before a previous stop or crash go first.
    await this.uploadCompleted()
    this.launch()
    this.uploadTimer = setInterval(() => void this.uploadCompleted(), this.options.pollIntervalMs ?? 1000)
  }

  /** Stops pg_receivewal (it flushes what it has), then uploads every completed file. */
  async stop(): Promise<void> {
    this.stopping = true
    clearInterval(this.uploadTimer)
    clearTimeout(this.restartTimer)
    const tool = this.tool
    if (tool && tool.child.exitCode === null && tool.child.signalCode === null) {
      tool.child.kill('SIGTERM')
      await tool.exited
    }

    await this.uploadCompleted()
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
      if (this.stopping) return
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
