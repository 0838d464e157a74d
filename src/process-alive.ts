import {readFileSync, readlinkSync} from 'node:fs'

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

/**
 * Where this process's pid means something: the kernel's boot and the pid namespace it numbers the
 * process in (`<first 8 hex of boot_id>.<namespace inode>`, e.g. `21f66b6d.4026531836`); undefined
 * where /proc does not say. Two containers on one host, or one container restarted, number their
 * processes independently, so a pid recorded by a process of another scope says nothing about any
 * process seen here: neither that it runs nor that it is gone. File-name safe.
 */
export function pidScope(): string | undefined {
  if (cachedScope === null) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().slice(0, 8)
      const namespace = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1]
      cachedScope = /^[0-9a-f]{8}$/.test(boot) && namespace ? `${boot}.${namespace}` : undefined
    } catch {
      cachedScope = undefined
    }
  }

  return cachedScope
}

let cachedScope: string | undefined | null = null

/** USER_HZ: the unit of /proc's start times, 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100

/** When this machine booted, in ms since the epoch (/proc/stat's btime); undefined where /proc does not say. */
export function bootedAt(): number | undefined {
  try {
    const seconds = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1])
    return Number.isFinite(seconds) ? seconds * 1000 : undefined
  } catch {
    return undefined
  }
}

/** When process `pid` started, in ms since the epoch (the boot time plus its start tick); undefined where /proc does not say. */
export function processStartedAt(pid: number): number | undefined {
  const ticks = Number(processStartTime(pid))
  const boot = bootedAt()
  return Number.isFinite(ticks) && boot !== undefined ? boot + (ticks * 1000) / CLOCK_TICKS_PER_SECOND : undefined
}
