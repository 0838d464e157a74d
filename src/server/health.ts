import type {DatabaseConfig} from '../config'
import {withClient} from '../db/connection'
import {errorMessage} from '../errors'
import type {StorageBackend} from '../storage/contract'

export type CheckResult = {ok: true; durationMs: number} | {ok: false; durationMs: number; error: string}

export interface HealthReport {
  healthy: boolean
  checks: {postgres: CheckResult; storage: CheckResult & {backend: string}}
}

export interface HealthTargets {
  database: DatabaseConfig
  storage: StorageBackend
  /** Per-check limit (default 5 s). */
  timeoutMs?: number
}

/**
 * The checks behind GET /health, also run once when `dbb serve` starts (so a wrong password or an
 * unreachable bucket is in the log at once, not only on the first probe): PostgreSQL answers a
 * query with the configured credentials, and the storage is reachable and writable.
 */
export async function runHealthChecks({database, storage, timeoutMs = 5000}: HealthTargets): Promise<HealthReport> {
  const [postgres, storageCheck] = await Promise.all([
    check(() => withClient(database, (client) => client.query('SELECT 1')), timeoutMs),
    check(() => storage.health(), timeoutMs),
  ])
  return {healthy: postgres.ok && storageCheck.ok, checks: {postgres, storage: {backend: storage.name, ...storageCheck}}}
}

/** Runs one check with a time limit; its failure is reported, not thrown. */
async function check(probe: () => Promise<unknown>, timeoutMs: number): Promise<CheckResult> {
  const started = Date.now()
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    await Promise.race([probe(), timeout])
    return {ok: true, durationMs: Date.now() - started}
  } catch (error) {
    return {ok: false, durationMs: Date.now() - started, error: errorMessage(error)}
  } finally {
    clearTimeout(timer)
  }
}
