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
