import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Gauge, Registry} from 'prom-client'

import type {WalAsyncConfig, WalReadAheadConfig} from '../config'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {lockSpool, reportUploaderError, runUploader, spoolStatus} from './spool'

// While a detached uploader (started by wal push --async) holds the spool, serve retries taking it this often.
const LOCK_RETRY_MS = 5000
// WAL_READ_AHEAD_DIR not readable (yet: serve may start before the server's initdb): looked at again this often.
export const READ_AHEAD_RETRY_MS = 10_000

/**
 * `dbb serve` with WAL_SPOOL_DIR set: uploads the async spool in-process (the same uploader as the
 * detached `wal spool-upload`, under the same lock, so only one of them runs at a time) and reports
 * the spool in /metrics: files and bytes waiting, and whether uploads are failing — a spool that
 * grows while storage is down is what to alert on before PostgreSQL's pg_wal fills. With
 * WAL_READ_AHEAD_DIR it also reads ahead the server's pg_wal, as the detached uploader reads ahead
 * the pg_wal of the push that started it; it announces that in the lock (pushes then wait for its
 * markers) only while the directory passes readAheadProbe, and takes it back at a read error.
 */
export function startSpoolService(options: {config: WalAsyncConfig & Partial<WalReadAheadConfig>; storage: StorageBackend; logger: Logger; registry?: Registry}): {stop(): Promise<void>} {
  const {config, storage, logger} = options
  const {spoolDir} = config
  if (!spoolDir) return {stop: async () => {}}
  if (options.registry) registerSpoolMetrics(options.registry, spoolDir)

  const controller = new AbortController()
  let readAheadOffUntil = 0
  // What was last logged, so that a lock given back and taken again every READ_AHEAD_RETRY_MS does not log each time.
  let lastProblem: string | undefined
  let lastStarted: string | undefined
  // A failure of the spool itself is logged once, not at every retry, until the uploader has run a
  // while without one.
  let lastFailure: string | undefined
  const spoolFailed = (event: string, message: string, error: unknown) => {
    const detail = errorMessage(error)
    if (`${event} ${detail}` === lastFailure) return
    lastFailure = `${event} ${detail}`
    logger.error({event, spoolDir, error: detail}, `${message}: ${detail}`)
  }

  const done = (async () => {
    while (!controller.signal.aborted) {
      let readAheadDir: string | undefined
      if (config.readAheadDir && Date.now() >= readAheadOffUntil) {
        const probe = await readAheadProbe(config.readAheadDir)
        if ('dir' in probe) {
          readAheadDir = probe.dir
          lastProblem = undefined
        } else {
          readAheadOffUntil = Date.now() + READ_AHEAD_RETRY_MS
          if (probe.reason !== lastProblem) {
            logger.error(
              {event: 'wal.read_ahead_unavailable', walDir: config.readAheadDir},
              `WAL_READ_AHEAD_DIR: cannot read ahead ${config.readAheadDir}: ${probe.reason}. Until it can, every push spools its segment (slower, nothing lost); looked at again every ${READ_AHEAD_RETRY_MS / 1000} s`,
            )
          }

          lastProblem = probe.reason
        }
      }

      // The lock names the pg_wal read ahead: pushes from that pg_wal wait for this uploader's markers.
      const lock = await lockSpool(spoolDir, readAheadDir).catch((error: unknown) => {
        spoolFailed('wal.spool_lock_failed', `cannot use the WAL spool ${spoolDir}`, error)
        return undefined
      })
      if (!lock) {
        await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS).unref())
        continue
      }

      const started = `uploading the WAL spool ${spoolDir}${readAheadDir ? `, reading ahead ${readAheadDir}` : ''}`
      if (started !== lastStarted) logger.info({event: 'wal.spool_uploader_started', spoolDir, parallel: config.parallel, ...(readAheadDir ? {readAheadDir} : {})}, started)
      lastStarted = started
      const began = Date.now()
      try {
        // Read-ahead asked for and not possible now: the lock is given back when it is time to look again.
        const stopStartingAt = config.readAheadDir && !readAheadDir ? readAheadOffUntil : undefined
        const result = await runUploader({storage, spoolDir, parallel: config.parallel, logger, signal: controller.signal, lock, walDir: readAheadDir, stopStartingAt})
        // pg_wal stopped being readable: the lock must stop promising read-ahead (pushes wait for it).
        if (result.readAheadFailed) readAheadOffUntil = Date.now() + READ_AHEAD_RETRY_MS
        lastFailure = undefined
      } catch (error) {
        // The spool itself failed (EIO, a volume gone read-only or full, the directory replaced):
        // uploads stop until it works again, but serve — its API, its scheduled backups — goes on.
        // This used to end serve with an unhandled rejection.
        if (controller.signal.aborted) break
        if (Date.now() - began > 2 * LOCK_RETRY_MS) lastFailure = undefined
        spoolFailed('wal.spool_uploader_failed', `the WAL spool uploader stopped on an error of the spool ${spoolDir}; trying again every ${LOCK_RETRY_MS / 1000} s`, error)
        await reportUploaderError(spoolDir, `${new Date().toISOString()} the spool ${spoolDir}: ${errorMessage(error)}`, 'serve')
        await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS).unref())
      } finally {
        await lock.release().catch(() => {})
      }
    }
  })()

  return {
    async stop() {
      controller.abort()
      await done
    },
  }
}

/**
 * Whether serve can read ahead `dir` for the server: the path a push names it by, or why not. A push
 * runs in the data directory and names pg_wal `<physical data directory>/pg_wal` (the cwd resolves
 * symlinks, `pg_wal` stays as it is even when it is a link to another volume, `initdb --waldir`), so
 * the parent is resolved and the last name kept. Serve must run as pg_wal's owner: it reads
 * every segment, and the push — the server's user — reads and removes the markers serve writes in
 * the spool (its own, mode 0700). A group that can read pg_wal is not enough for the second.
 */
export async function readAheadProbe(dir: string, uid = process.getuid?.()): Promise<{dir: string} | {reason: string}> {
  try {
    const real = path.join(await fs.realpath(path.dirname(path.resolve(dir))), path.basename(path.resolve(dir)))
    const {uid: owner} = await fs.stat(real)
    if (uid !== undefined && owner !== uid) return {reason: `it belongs to uid ${owner} and dbb serve runs as uid ${uid}; run serve as the server's OS user (uid ${owner})`}
    await fs.readdir(path.join(real, 'archive_status'))
    return {dir: real}
  } catch (error) {
    return {reason: errorMessage(error)}
  }
}

function registerSpoolMetrics(registry: Registry, spoolDir: string): void {
  let status: Promise<Awaited<ReturnType<typeof spoolStatus>>> | undefined
  // One directory scan per scrape, shared by the three gauges.
  // A spool that cannot be read is reported as failing, its size unknown (NaN): /metrics must not
  // fail as a whole, which would hide every other gauge from the scrape.
  const read = () =>
    (status ??= spoolStatus(spoolDir)
      .catch((error: unknown) => ({files: Number.NaN, bytes: Number.NaN, lastError: `the spool cannot be read: ${errorMessage(error)}`}))
      .finally(() => setTimeout(() => (status = undefined), 0)))
  new Gauge({
    name: 'dbb_wal_spool_files',
    help: 'WAL files waiting in the async spool (WAL_SPOOL_DIR) for the uploader.',
    registers: [registry],
    async collect() {
      this.set((await read()).files)
    },
  })
  new Gauge({
    name: 'dbb_wal_spool_bytes',
    help: 'Bytes of WAL waiting in the async spool.',
    registers: [registry],
    async collect() {
      this.set((await read()).bytes)
    },
  })
  new Gauge({
    name: 'dbb_wal_spool_upload_failing',
    help: '1 while the spool uploader is failing to store WAL (its last error is in WAL_SPOOL_DIR/uploader.error), else 0.',
    registers: [registry],
    async collect() {
      this.set((await read()).lastError ? 1 : 0)
    },
  })
}
