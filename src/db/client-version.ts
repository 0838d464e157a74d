import {OperationError} from '../errors'

/**
 * PostgreSQL's major version of a version string: `15.18` → 15, `18beta1` → 18, `9.6.24` → 9.6
 * (before 10 the major had two parts). Undefined when the string holds no version.
 */
export function majorVersion(version: string): number | undefined {
  const match = /^(\d+)(?:\.(\d+))?/.exec(version.trim())
  if (!match) return undefined
  const first = Number(match[1])
  return first < 10 && match[2] !== undefined ? Number(`${first}.${match[2]}`) : first
}

/**
 * pg_dump, pg_basebackup and pg_receivewal refuse a server of a newer major version ("aborting
 * because of server version mismatch"); they handle older servers (back to 9.2). Checked before
 * anything is written, with what to install instead of the tool's one-line refusal.
 */
export function requireClientForServer(tool: string, clientVersion: string, serverVersion: string): void {
  const client = majorVersion(clientVersion)
  const server = majorVersion(serverVersion)
  if (client === undefined || server === undefined || server <= client) return
  throw new OperationError(
    `the PostgreSQL server is version ${serverVersion} but ${tool} is ${clientVersion}: ${tool} cannot work with a server newer than itself. ` +
      `Install the PostgreSQL ${server} client tools (they also handle older servers): in dbb's Docker image, build with ` +
      `--build-arg PG_CLIENT_VERSION=${server}; on Debian/Ubuntu, apt-get install postgresql-client-${server} from the PGDG repository ` +
      `(apt.postgresql.org); or put that version's bin directory first on PATH.`,
  )
}
