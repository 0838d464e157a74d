import {execFile, execFileSync} from 'node:child_process'
import {existsSync, readdirSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {promisify} from 'node:util'
import {Client} from 'pg'

import {freePort} from '../../src/drill/private-server'

const run = promisify(execFile)

/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir, a free port on 127.0.0.1,
 * scram-sha-256 password auth. PostgreSQL refuses to run as root, and CI runs as root, so the
 * server runs as the `postgres` OS user (created by Debian's postgresql package) via runuser.
 */
export interface PgCluster {
  host: string
  port: number
  user: string
  password: string
  baseDir: string
  dataDir: string
  binDir: string
  /** DB_* variables for dbb, pointing at this cluster's `postgres` database or the one given. */
  dbbEnv(database?: string): Record<string, string>
  /** Runs SQL through psql (unaligned, tuples only) and returns stdout. */
  psql(sql: string, database?: string): Promise<string>
  start(): Promise<void>
  stop(mode?: 'fast' | 'immediate'): Promise<void>
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>
}

export function postgresBinDir(): string {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((version) => existsSync(path.join(root, version, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : []
  if (versions.length === 0) {
    throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `npm test` (it installs them) or set PG_BIN_DIR')
  }

  return path.join(root, versions[0], 'bin')
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0

/** Wraps a command so it runs as the `postgres` OS user when we are root. */
export function asServerUser(command: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args]
}

// One free-port helper for dbb and its tests (the physical drill picks its private server's port with it).
export {freePort}

export async function makeServerOwnedDir(prefix: string, parent = os.tmpdir()): Promise<string> {
  const dir = await fs.mkdtemp(path.join(parent, prefix))
  if (isRoot) execFileSync('chown', ['postgres:postgres', dir])
  return dir
}

export async function startPostgres(options: {settings?: Record<string, string>; password?: string} = {}): Promise<PgCluster> {
  const binDir = postgresBinDir()
  const baseDir = await makeServerOwnedDir('dbb-pg-')
  await fs.chmod(baseDir, 0o755)
  const dataDir = path.join(baseDir, 'data')
  const password = options.password ?? 'test-secret-password'
  const pwfile = path.join(baseDir, 'pwfile')
  await fs.writeFile(pwfile, `${password}\n`, {mode: 0o600})
  if (isRoot) execFileSync('chown', ['postgres:postgres', pwfile])
  const port = await freePort()
  const user = 'postgres'

  const server = async (command: string, args: string[]) => {
    const [file, argv] = asServerUser(path.join(binDir, command), args)
    return run(file, argv, {cwd: baseDir, env: {...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8'}})
  }

  await server('initdb', [
    '-D',
    dataDir,
    '-U',
    user,
    `--pwfile=${pwfile}`,
    '--auth-local=scram-sha-256',
    '--auth-host=scram-sha-256',
    '--no-sync',
    '--encoding=UTF8',
  ])
  const settings: Record<string, string> = {
    port: String(port),
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${baseDir}'`,
    fsync: 'off',
    full_page_writes: 'off',
    synchronous_commit: 'off',
    max_connections: '50',
    ...options.settings,
  }
  await fs.appendFile(
    path.join(dataDir, 'postgresql.conf'),
    `\n${Object.entries(settings)
      .map(([key, value]) => `${key} = ${value}`)
      .join('\n')}\n`,
  )

  const libpqEnv = (database = 'postgres') => ({
    ...process.env,
    PGHOST: '127.0.0.1',
    PGPORT: String(port),
    PGUSER: user,
    PGPASSWORD: password,
    PGDATABASE: database,
  })

  const cluster: PgCluster = {
    host: '127.0.0.1',
    port,
    user,
    password,
    baseDir,
    dataDir,
    binDir,
    dbbEnv: (database = 'postgres') => ({
      DB_HOST: '127.0.0.1',
      DB_PORT: String(port),
      DB_USER: user,
      DB_PASSWORD: password,
      DB_NAME: database,
    }),
    async psql(sql, database = 'postgres') {
      const {stdout} = await run('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
        env: libpqEnv(database),
        maxBuffer: 256 * 1024 * 1024,
      })
      return stdout.trim()
    },
    async start() {
      await server('pg_ctl', ['-D', dataDir, '-l', path.join(baseDir, 'server.log'), '-w', '-t', '60', 'start'])
    },
    async stop(mode = 'fast') {
      await server('pg_ctl', ['-D', dataDir, '-m', mode, '-w', 'stop']).catch(() => {})
    },
    async destroy() {
      await cluster.stop('immediate')
      await fs.rm(baseDir, {recursive: true, force: true})
    },
  }
  await cluster.start()
  return cluster
}

/**
 * Holds ACCESS EXCLUSIVE on a table from a separate session, so a pg_dump started now blocks on it:
 * a backup that stays in flight, deterministically, until `release()` (or until the session is
 * terminated, e.g. by a restore's DROP DATABASE … WITH (FORCE)).
 */
export async function holdTableLock(cluster: PgCluster, database: string, table: string): Promise<() => Promise<void>> {
  const client = new Client({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database})
  client.on('error', () => {}) // the session may be terminated while it holds the lock
  await client.connect()
  await client.query('BEGIN')
  await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`)
  return async () => {
    await client.query('ROLLBACK').catch(() => {})
    await client.end().catch(() => {})
  }
}
