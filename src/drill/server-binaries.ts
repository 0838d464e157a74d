import {existsSync} from 'node:fs'
import * as path from 'node:path'

import {runTool} from '../backup/child-process'

/** `postgres --version` and `pg_config --bindir` answer at once; a hung one must not hang the drill. */
const PROBE_TIMEOUT_MS = 10_000

/** The major version of a server version string ("15.18", "16beta1", "PostgreSQL 15.4 (Debian …)"). */
export function majorVersion(version: string): number | undefined {
  const match = /(\d+)(?:\.\d+|beta|rc|devel)/.exec(version) ?? /^(\d+)$/.exec(version.trim())
  const major = match ? Number(match[1]) : Number.NaN
  return Number.isInteger(major) && major > 0 ? major : undefined
}

/** Where a distribution keeps PostgreSQL <major>'s server binaries, in the order they are tried (after PATH and pg_config). */
function packagedDirectories(major: number): string[] {
  return [`/usr/lib/postgresql/${major}/bin`, `/usr/pgsql-${major}/bin`, `/usr/local/pgsql/bin`, `/opt/homebrew/opt/postgresql@${major}/bin`]
}

async function binDirMajor(binDir: string): Promise<number | undefined> {
  if (!existsSync(path.join(binDir, 'pg_ctl')) || !existsSync(path.join(binDir, 'postgres'))) return undefined
  try {
    const {stdout} = await runTool(path.join(binDir, 'postgres'), ['--version'], {}, {timeout: PROBE_TIMEOUT_MS})
    return majorVersion(stdout.replace(/^postgres \(PostgreSQL\)\s*/, ''))
  } catch {
    return undefined
  }
}

/**
 * The directory holding `pg_ctl` and `postgres` of the given major version: PATH, `pg_config
 * --bindir`, then the distributions' versioned directories (Debian's /usr/lib/postgresql/N/bin,
 * PGDG's /usr/pgsql-N/bin). A server of another major version cannot start the data directory.
 * Returns undefined when none matches, with the versions that were found.
 */
export async function findServerBinaries(major: number): Promise<{binDir?: string; found: {binDir: string; major: number}[]}> {
  const candidates: string[] = []
  for (const entry of (process.env.PATH ?? '').split(path.delimiter)) if (entry) candidates.push(entry)
  const pgConfig = await runTool('pg_config', ['--bindir'], {}, {timeout: PROBE_TIMEOUT_MS}).then(
    ({stdout}) => stdout.trim(),
    () => undefined,
  )
  if (pgConfig) candidates.push(pgConfig)
  candidates.push(...packagedDirectories(major))
  const found: {binDir: string; major: number}[] = []
  for (const binDir of [...new Set(candidates)]) {
    const version = await binDirMajor(binDir)
    if (version === undefined) continue
    if (version === major) return {binDir, found}
    found.push({binDir, major: version})
  }

  return {found}
}
