import * as fs from 'node:fs/promises'
import * as path from 'node:path'

/**
 * PostgreSQL's lock file in a data directory, as the server writes it: line 1 the postmaster's pid,
 * line 2 the data directory, line 3 its start time in seconds since the epoch (then port, socket
 * directory, …). A restore refuses a directory where it stands (src/restore/recovery-config.ts);
 * a drill's sweep finds the server a killed drill left (src/drill/private-server.ts).
 */
export const POSTMASTER_LOCK_FILE = 'postmaster.pid'

export interface PostmasterLock {
  file: string
  /** Undefined where line 1 is not a positive whole number (a file being written, or damaged). */
  pid?: number
  dataDir?: string
  /** ms since the epoch; undefined where line 3 is not a positive whole number. */
  startedAt?: number
}

/** The lock file of `dataDir`, or undefined when there is none. Any other read error is thrown: it is not "absent". */
export async function readPostmasterLock(dataDir: string): Promise<PostmasterLock | undefined> {
  const file = path.join(dataDir, POSTMASTER_LOCK_FILE)
  const text = await fs.readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (text === undefined) return undefined
  const [pidLine, dirLine, startLine] = text.split('\n').map((line) => line.trim())
  const positive = (line: string | undefined) => (line !== undefined && /^\d+$/.test(line) && Number(line) > 0 ? Number(line) : undefined)
  const seconds = positive(startLine)
  return {file, pid: positive(pidLine), dataDir: dirLine || undefined, startedAt: seconds === undefined ? undefined : seconds * 1000}
}
