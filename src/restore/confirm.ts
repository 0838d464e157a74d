import {setTimeout as sleep} from 'node:timers/promises'

import type {BackupMetadata} from '../backup/metadata'
import type {DatabaseConfig} from '../config'
import {AbortedError, UsageError} from '../errors'
import {formatAge, formatBytes} from '../format'

export const COUNTDOWN_SECONDS = 5

/** What the restore is about to do, shown before the countdown (and logged with --force). */
export function describePlan(backup: BackupMetadata, database: DatabaseConfig, target: string, storageLocation: string): string {
  return [
    `Restore ${backup.id}`,
    `  created   ${backup.createdAt} (${formatAge(backup.createdAt)} ago), from database "${backup.database}", PostgreSQL ${backup.pgVersion}`,
    `  size      ${formatBytes(backup.sizeBytes)}${backup.uncompressedBytes === undefined ? '' : ` (${formatBytes(backup.uncompressedBytes)} of SQL)`}, sha256 ${backup.sha256}`,
    `  from      ${storageLocation}`,
    `  into      database "${target}" on ${database.host}:${database.port} as ${database.user}`,
    `  Database "${target}" will be DROPPED and recreated (other sessions on it are terminated).`,
  ].join('\n')
}

/**
 * Restoring destroys the target's current contents, so it never starts unattended by accident:
 * without --force it needs a terminal on stdin (someone who can press Ctrl-C during the countdown).
 */
export function requireConfirmation(options: {force: boolean; interactive: boolean; target: string}): void {
  if (options.force || options.interactive) return
  throw new UsageError(
    `refusing to replace database "${options.target}" without confirmation: stdin is not a terminal. ` +
      'Run it in a terminal (docker exec -it …) to get a 5-second countdown, or add --force for automation.',
  )
}

/** A visible countdown on `stream`; resolves when it reaches zero, throws AbortedError on Ctrl-C (the signal). */
export async function countdown(stream: NodeJS.WritableStream, signal: AbortSignal, seconds = COUNTDOWN_SECONDS): Promise<void> {
  try {
    for (let left = seconds; left > 0; left--) {
      stream.write(`\r\u001B[2KStarting in ${left} s — press Ctrl-C to abort`)
      await sleep(1000, undefined, {signal})
    }

    stream.write('\r\u001B[2K')
  } catch (error) {
    stream.write('\n')
    if (signal.aborted) throw new AbortedError('restore aborted; nothing was changed')
    throw error
  }
}
