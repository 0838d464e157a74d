import {availableParallelism} from 'node:os'

/**
 * Defaults of COMPRESSION_LEVEL / COMPRESSION_THREADS, kept free of heavy imports because the
 * config module (loaded by every command) reads them.
 *
 * Level 1: on the benchmark data (pgbench rows plus wide text/jsonb) it is the level that keeps
 * `dbb backup run` closest to the pg_dump floor, and its files are only a few percent larger than
 * level 6 (README, "Performance and compression settings", has the measured trade-off).
 */
export const DEFAULT_COMPRESSION_LEVEL = 1

/**
 * Threads of libuv's pool, which runs the compression jobs (and file I/O and the in-stream
 * gunzip check): UV_THREADPOOL_SIZE as the process started with it, else libuv's default 4.
 */
export function threadPoolSize(): number {
  const configured = Number(process.env.UV_THREADPOOL_SIZE)
  return Number.isInteger(configured) && configured > 0 ? Math.min(configured, 1024) : 4
}

/** The cores available, leaving one pool thread for I/O and the gzip check. */
export function defaultCompressionThreads(): number {
  return Math.max(1, Math.min(availableParallelism(), threadPoolSize() - 1))
}
