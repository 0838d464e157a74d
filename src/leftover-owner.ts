import {utimes} from 'node:fs/promises'

import {pidScope, processAlive} from './process-alive'

/**
 * Who made a temporary directory in a shared place (TMPDIR), and whether it is provably gone.
 *
 * A SIGKILL runs no handler, so the next run removes what a killed one left: a parallel restore's
 * archive file, a physical drill's data directory. It must never remove what a live run still
 * uses. A pid alone cannot say that across pid namespaces: a TMPDIR shared by two containers of
 * one pod (an emptyDir), or kept across a container's restart, holds directories of processes this
 * one cannot see, numbered independently of its own. So an owner records its scope
 * (process-alive.ts, pidScope) beside its pid:
 *  - same scope: the pid decides (gone once no process has it; a reused pid keeps the directory
 *    until that process ends — late, never wrong);
 *  - another scope: only the owner's heartbeat can tell. A live owner touches its directory (or
 *    marker) every HEARTBEAT_INTERVAL_MS; one untouched for ORPHANED_AFTER_MS is gone.
 * Records without a scope (an older dbb's) keep the pid rule they were written for.
 */

/** How often a live owner touches its directory: far below ORPHANED_AFTER_MS, so a busy event loop or a slow disk never ages it. */
export const HEARTBEAT_INTERVAL_MS = 60_000
/** A directory of another scope untouched this long is a dead run's. */
export const ORPHANED_AFTER_MS = 10 * 60_000

export interface LeftoverOwner {
  pid: number
  /** pidScope() of the owner; undefined for records made before scopes were written. */
  scope?: string
}

export function thisOwner(): LeftoverOwner {
  return {pid: process.pid, scope: pidScope()}
}

/** `<pid>` or `<pid>@<scope>`: the owner as a file-name part (ownerFromTag reads it back). */
export function ownerTag(owner: LeftoverOwner = thisOwner()): string {
  return owner.scope === undefined ? String(owner.pid) : `${owner.pid}@${owner.scope}`
}

/** The pattern of ownerTag, for names that embed it: group 1 the pid, group 2 the scope (if any). */
export const OWNER_TAG_PATTERN = String.raw`(\d+)(?:@([0-9a-f]{8}\.\d+))?`

export function ownerFromTag(pid: string, scope: string | undefined): LeftoverOwner {
  return {pid: Number(pid), scope}
}

/**
 * Whether `owner` provably runs no more, `lastTouched` being when its directory (or marker) was
 * last modified. Its own directories are never gone to this process.
 */
export function ownerGone(owner: LeftoverOwner, lastTouched: Date, now = Date.now()): boolean {
  if (!Number.isSafeInteger(owner.pid) || owner.pid <= 0) return false
  const here = pidScope()
  if (owner.scope === undefined || owner.scope === here) return owner.pid !== process.pid && !processAlive(owner.pid)
  return now - lastTouched.getTime() > ORPHANED_AFTER_MS
}

/** Whether a pid recorded by `owner` names a process of this scope (one this process may signal). */
export function sameScope(owner: LeftoverOwner): boolean {
  return owner.scope === pidScope()
}

/**
 * Touches `path` every HEARTBEAT_INTERVAL_MS until the returned function is called, so runs in
 * other pid namespaces can tell it is in use. The timer does not keep the process alive; a failed
 * touch (the directory removed meanwhile) is ignored: the owner's own work reports that.
 */
export function keepTouched(path: string): () => void {
  const timer = setInterval(() => {
    const now = new Date()
    utimes(path, now, now).catch(() => {})
  }, HEARTBEAT_INTERVAL_MS)
  timer.unref()
  return () => clearInterval(timer)
}
