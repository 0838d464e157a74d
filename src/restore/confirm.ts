import {setTimeout as sleep} from 'node:timers/promises'

import type {DatabaseConfig} from '../config'
import {AbortedError, UsageError} from '../errors'
import {formatAge, formatBytes} from '../format'
import type {LogicalRestorePlan} from './logical'

export const COUNTDOWN_SECONDS = 5

/** What the restore is about to do, shown before the countdown (and logged with --force). */
export function describePlan(plan: LogicalRestorePlan, database: DatabaseConfig, storageLocation: string): string {
  const {backup, names} = plan
  const target = `"${names.target}"`
  const lines = [
    `Restore ${backup.id}`,
    `  created   ${backup.createdAt} (${formatAge(backup.createdAt)} ago), from database "${backup.database}", PostgreSQL ${backup.pgVersion}`,
    `  size      ${formatBytes(backup.sizeBytes)}${backup.uncompressedBytes === undefined ? '' : ` (${formatBytes(backup.uncompressedBytes)} of SQL)`}, sha256 ${backup.sha256}`,
    `  from      ${storageLocation}`,
    `  into      database ${target} on ${database.host}:${database.port} (PostgreSQL ${plan.serverVersion}) as ${plan.user}${plan.owner === undefined ? '' : `, objects owned by role "${plan.owner}"`}`,
    `  staging   the dump is imported into the new database "${names.staging}"; ${target} is not touched meanwhile and stays in use.`,
    plan.targetExists
      ? `  swap      only if the import succeeds and the sha256 matches: ${target}'s sessions are terminated and, in one transaction, ` +
        `${target} is renamed to "${plan.keepPrevious ? names.previous : names.replaced}" and the staging database to ${target}.`
      : `  swap      database ${target} does not exist: it will be created (the staging database is renamed to it) once the import succeeds.`,
  ]
  if (plan.targetExists) {
    lines.push(
      plan.keepPrevious
        ? `  previous  the replaced database is kept as "${names.previous}" (roll back by renaming it back; drop it when done).`
        : `  previous  the replaced database is then DROPPED (keep it with --keep-previous).`,
    )
  }

  const {carryOver, preflight} = plan.fidelity
  if (carryOver.willCarryOver.length > 0) lines.push(`  carry     from ${carryOver.from}: ${carryOver.willCarryOver.join('; ')}`)
  for (const line of carryOver.willNotCarryOver) lines.push(`  not       ${line}`)
  // The space estimate is information for every restore; the other findings are worth a warning.
  for (const warning of preflight.warnings) {
    lines.push(`  ${warning.code === 'DISK_SPACE_HINT' ? 'space   ' : 'WARNING '}  ${warning.message}${warning.fix ? ` (${warning.fix})` : ''}`)
  }
  if (plan.leftovers.length > 0) lines.push(`  leftovers of earlier restores (dropped unless a restore is using them): ${plan.leftovers.map((name) => `"${name}"`).join(', ')}`)
  return lines.join('\n')
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
