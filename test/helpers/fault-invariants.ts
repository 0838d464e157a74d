import {ChildProcess, spawn} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from './cli'
import type {PgCluster} from './postgres'
import {newestFirst as byIdNewestFirst} from '../../src/backup/metadata'

/**
 * What every fault test of the reliability suite checks after the fault (issue 8): the backups
 * that existed before are exactly what is listed (nothing half-written appeared, retention deleted
 * nothing), `latest` is the newest of them, and each one downloads with the sha256 its sidecar
 * records — hashed here from the downloaded file, not taken from dbb's word.
 */
export interface KnownBackup {
  id: string
  sha256: string
  createdAt: string
}

export async function listIds(storageEnv: Record<string, string | undefined>): Promise<KnownBackup[]> {
  const result = await runCli(['backup', 'list', '--json'], storageEnv)
  if (result.code !== 0) throw new Error(`backup list failed (${result.code}): ${result.stderr}`)
  return JSON.parse(result.stdout)
}

export async function expectEarlierBackupsIntact(storageEnv: Record<string, string | undefined>, known: KnownBackup[]): Promise<void> {
  // The listing's order: by id (its second, then the -N of backups started within the same second).
  const newestFirst = [...known].sort(byIdNewestFirst)
  const listed = await listIds(storageEnv)
  expect(listed.map((backup) => backup.id)).toEqual(newestFirst.map((backup) => backup.id))

  const dir = await tempDir('dbb-verify-')
  try {
    for (const reference of [...newestFirst.map((backup) => backup.id), 'latest']) {
      const file = path.join(dir, reference === 'latest' ? 'latest.sql.gz' : reference)
      const result = await runCli(['backup', 'download', reference, '-o', file], storageEnv)
      expect([reference, result.code, result.stderr]).toEqual([reference, 0, expect.any(String)])
      const expected = reference === 'latest' ? newestFirst[0] : newestFirst.find((backup) => backup.id === reference)!
      const actual = createHash('sha256').update(await fs.readFile(file)).digest('hex')
      expect([reference, actual]).toEqual([reference, expected.sha256])
    }
  } finally {
    await fs.rm(dir, {recursive: true, force: true})
  }
}

/** Runs a backup that must succeed (without retention) and returns its metadata. */
export async function backupSucceeds(env: Record<string, string | undefined>): Promise<KnownBackup> {
  const result = await runCli(['backup', 'run', '--json', '--no-prune'], env)
  if (result.code !== 0) throw new Error(`backup run failed (${result.code}): ${result.stderr}`)
  return JSON.parse(result.stdout).metadata
}

/** Holds ACCESS EXCLUSIVE on a table, so pg_dump blocks on it (deterministically, after it has started). */
export function lockTable(cluster: PgCluster, database: string, table: string): ChildProcess {
  return spawn('psql', ['-X', '-q', '-c', `BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);`], {
    env: {
      ...process.env,
      PGHOST: cluster.host,
      PGPORT: String(cluster.port),
      PGUSER: cluster.user,
      PGPASSWORD: cluster.password,
      PGDATABASE: database,
      PGAPPNAME: LOCKER_APP,
    },
    stdio: 'ignore',
  })
}

const LOCKER_APP = 'dbb-test-locker'

/**
 * Ends the lock holder. Killing psql is not enough: its backend sits in pg_sleep, holding the
 * lock, until it next talks to the client — so terminate the backend too.
 */
export async function releaseLock(cluster: PgCluster, locker: ChildProcess | undefined): Promise<void> {
  kill(locker)
  await cluster.psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${LOCKER_APP}'`).catch(() => '')
}

export async function waitUntilLocked(cluster: PgCluster, database: string, table: string): Promise<void> {
  await pollUntil(
    async () => (await cluster.psql(`SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = '${table}'::regclass AND granted`, database)) === '1',
    'the table lock',
  )
}

/** Until pg_dump (application_name dbb) waits on a lock. */
export async function waitUntilDumpBlocked(cluster: PgCluster): Promise<void> {
  await pollUntil(
    async () => (await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)) === '1',
    'pg_dump to wait on the lock',
  )
}

/** Direct children of a process, with their command lines (Linux /proc). */
export async function childProcesses(pid: number): Promise<{pid: number; cmdline: string}[]> {
  const text = await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  const pids = text.trim().split(/\s+/).filter(Boolean).map(Number)
  const children = await Promise.all(
    pids.map(async (child) => ({pid: child, cmdline: (await fs.readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ')})),
  )
  return children.filter((child) => child.cmdline !== '')
}

export async function pollUntil(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

export function kill(child: ChildProcess | undefined): void {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
