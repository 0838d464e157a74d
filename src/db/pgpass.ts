import {readFile} from 'node:fs/promises'

/**
 * Looks up a password in a pgpass file (`host:port:database:user:password`, `*` wildcards, `\:`
 * and `\\` escapes), as libpq does. Used for dbb's own queries; pg_dump and psql are handed the
 * file itself through PGPASSFILE.
 */
export async function passwordFromPassfile(
  file: string,
  target: {host: string; port: number; database: string; user: string},
): Promise<string | undefined> {
  const text = await readFile(file, 'utf8')
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
