import {readFileSync} from 'node:fs'

/**
 * Whether a process with this pid exists. EPERM means it exists and belongs to another user (the
 * postgres server seen from root, say): alive. A pid can be reused, so callers only ever use a
 * "dead" answer to clean up after a process, never an "alive" one as proof of who it is.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * When process `pid` started: clock ticks after boot, field 22 of /proc/<pid>/stat (after the
 * command name, which may hold spaces and parentheses, hence the last ')'). Undefined where /proc
 * does not say (no such process, not Linux).
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/**
 * Whether the process that recorded `pid` and `startTime` still runs — not merely some process with
 * that pid. Pids are reused: a container restarted on the same volume numbers its processes from 1
 * again, so a lock left by a SIGKILLed process can name a PostgreSQL backend of the new container.
 * Without a recorded start time (an older lock file) the pid alone decides.
 */
export function recordedProcessAlive(pid: number, startTime: string | undefined): boolean {
  if (!processAlive(pid)) return false
  if (startTime === undefined) return true
  const current = processStartTime(pid)
  return current === undefined || current === startTime
}
