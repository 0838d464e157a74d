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
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses,
 * hence the last ')'): [0] is the state, [19] the start time in clock ticks after boot (field 22).
 * Undefined where /proc does not say (no such process, not Linux).
 */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** When process `pid` started: clock ticks after boot (field 22 of /proc/<pid>/stat); undefined where /proc does not say. */
export function processStartTime(pid: number): string | undefined {
  return statFields(pid)?.[19]
}

/**
 * Whether the process that recorded `pid` and `startTime` still runs — not merely some process with
 * that pid. Pids are reused: a container restarted on the same volume numbers its processes from 1
 * again, so a lock left by a SIGKILLed process can name a PostgreSQL backend of the new container.
 * A zombie (state Z: exited, not yet reaped) runs no more: a prefetcher that died while the fetch
 * that started it waits (synchronously, so it cannot reap it) is its zombie until that fetch exits,
 * and `kill(pid, 0)` still succeeds on it. Without a recorded start time (an older lock file) the
 * pid alone decides.
 */
export function recordedProcessAlive(pid: number, startTime: string | undefined): boolean {
  if (!processAlive(pid)) return false
  const fields = statFields(pid)
  if (fields?.[0] === 'Z') return false
  if (startTime === undefined) return true
  return fields === undefined || fields[19] === startTime
}
