import {readFileSync} from 'node:fs'
import * as os from 'node:os'

/** How a pgpass line reads, for messages: libpq's format, `*` matches anything. */
export const PGPASS_LINE_FORMAT = 'hostname:port:database:username:password (one per line, * matches any value, \\: and \\\\ escape)'

/**
 * Looks up a password in a pgpass file (`host:port:database:user:password`, `*` wildcards, `\:`
 * and `\\` escapes), as libpq does. dbb resolves the password itself and hands it to the client
 * programs (PGPASSWORD in their environment only), so a pgpass secret mounted 0444 or 0644 by
 * Docker or Kubernetes works, which libpq would refuse. Synchronous: the file is a few lines and
 * is read when a child's environment is built. A read error throws, naming file, user and cause.
 */
export function passwordFromPassfile(file: string, target: {host: string; port: number; database: string; user: string}): string | undefined {
  const text = readPassfile(file)
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '' || line.startsWith('#')) continue
    const fields = splitEscaped(line)
    if (fields.length < 5) continue
    const [host, port, database, user] = fields
    const password = fields.slice(4).join(':')
    if (
      matches(host, target.host) &&
      matches(port, String(target.port)) &&
      matches(database, target.database) &&
      matches(user, target.user)
    ) {
      return password
    }
  }

  return undefined
}

function readPassfile(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    throw new Error(passfileProblem(file, error))
  }
}

/** `cannot read /run/secrets/pgpass as user node (uid 1000): permission denied (EACCES)…`: a secret file that cannot be read. */
export function passfileProblem(file: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code
  const cause =
    code === 'EACCES' || code === 'EPERM'
      ? `permission denied (${code}); make it readable by this user`
      : code === 'ENOENT'
        ? 'no such file (ENOENT)'
        : code === 'EISDIR'
          ? 'it is a directory (EISDIR)'
          : (error as Error).message
  return `cannot read ${file} as ${currentUser()}: ${cause}`
}

/** `user node (uid 1000)`; under an arbitrary uid without a passwd entry, just the uid. */
export function currentUser(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
  let name: string | undefined
  try {
    name = os.userInfo().username
  } catch {
    name = undefined
  }

  if (name && uid !== undefined) return `user ${name} (uid ${uid})`
  return uid === undefined ? `user ${name ?? 'unknown'}` : `uid ${uid}`
}

function matches(pattern: string, value: string): boolean {
  return pattern === '*' || pattern === value
}

function splitEscaped(line: string): string[] {
  const fields: string[] = []
  let current = ''
  for (let index = 0; index < line.length; index++) {
    const char = line[index]
    if (char === '\\' && index + 1 < line.length) {
      current += line[++index]
    } else if (char === ':' && fields.length < 4) {
      fields.push(current)
      current = ''
    } else {
      current += char
    }
  }

  fields.push(current)
  return fields
}
