import {Gauge, Registry} from 'prom-client'

import type {WalAsyncConfig} from '../config'
import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {lockSpool, runUploader, spoolStatus} from './spool'

// While a detached uploader (started by wal push --async) holds the spool, serve retries taking it this often.
const LOCK_RETRY_MS = 5000

/**
 * `dbb serve` with WAL_SPOOL_DIR set: uploads the async spool in-process (the same uploader as the
 * detached `wal spool-upload`, under the same lock, so only one of them runs at a time) and reports
 * the spool in /metrics: files and bytes waiting, and whether uploads are failing — a spool that
 * grows while storage is down is what to alert on before PostgreSQL's pg_wal fills.
 */
export function startSpoolService(options: {config: WalAsyncConfig; storage: StorageBackend; logger: Logger; registry?: Registry}): {stop(): Promise<void>} {
  const {config, storage, logger} = options
  const {spoolDir} = config
  if (!spoolDir) return {stop: async () => {}}
  if (options.registry) registerSpoolMetrics(options.registry, spoolDir)

  const controller = new AbortController()
  const done = (async () => {
    while (!controller.signal.aborted) {
      const lock = await lockSpool(spoolDir).catch((error: unknown) => {
        logger.error({event: 'wal.spool_lock_failed', spoolDir, error: errorMessage(error)}, `cannot use the WAL spool ${spoolDir}`)
        return undefined
      })
      if (!lock) {
        await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS).unref())
        continue
      }

      logger.info({event: 'wal.spool_uploader_started', spoolDir, parallel: config.parallel}, `uploading the WAL spool ${spoolDir}`)
      try {
        await runUploader({storage, spoolDir, parallel: config.parallel, logger, signal: controller.signal, lock})
      } finally {
        await lock.release()
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

function registerSpoolMetrics(registry: Registry, spoolDir: string): void {
  let status: Promise<Awaited<ReturnType<typeof spoolStatus>>> | undefined
  // One directory scan per scrape, shared by the three gauges.
  const read = () => (status ??= spoolStatus(spoolDir).finally(() => setTimeout(() => (status = undefined), 0)))
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
