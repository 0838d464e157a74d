import {existsSync} from 'node:fs'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {BIN} from './cli'
import type {PgCluster} from './postgres'

/** postgresql.conf settings for continuous archiving into a local dbb storage directory (writable by postgres). */
export function archivingSettings(storeDir: string): Record<string, string> {
  return {
    wal_level: 'replica',
    archive_mode: 'on',
    // Absolute paths: archive_command runs as postgres, in the data directory, with the server's PATH.
    archive_command: `'${process.execPath} ${BIN} wal push --local-dir ${storeDir} %p'`,
  }
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/** Closes the current WAL segment and waits until archive_command has stored it; returns its name. */
export async function switchWalAndWaitArchived(cluster: PgCluster, storeDir: string): Promise<string> {
  const segment = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  await waitFor(`${segment} in the archive`, async () => (existsSync(path.join(storeDir, 'wal', `${segment}.gz`)) ? true : undefined))
  return segment
}

/** After a restore: waits until recovery has ended and the server accepts writes. */
export async function waitForPromotion(cluster: PgCluster): Promise<void> {
  await waitFor('the end of recovery', async () => ((await cluster.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f' ? true : undefined), 60_000)
}
