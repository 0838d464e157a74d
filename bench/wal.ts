/**
 * `npm run bench:wal`: WAL archiving throughput and archiver lag (issue 13, item 5), with a real
 * PostgreSQL and local storage. Prints a Markdown table for BENCHMARKS.md ("WAL archiving").
 *
 *  - Sustained archiving: PostgreSQL first writes a backlog of WAL with archive_command empty (so
 *    the segments wait in pg_wal as `.ready`); then archive_command is set to dbb and the time until
 *    storage holds every segment is measured. Sync: `dbb wal push %p`; async: `dbb wal push --async
 *    %p` (spool + detached uploader with read-ahead). MB/s = segments waiting × 16 MiB / that time.
 *  - Archiver lag under pgbench at full speed: pgbench runs with archiving on; every 250 ms the
 *    distance in segments between the segment being written and the last one archived is sampled.
 *
 * Flags: --backlog-mb N (default 512), --pgbench-seconds N (default 30), --note TEXT. The table
 * replaces the part of BENCHMARKS.md between the bench-wal markers (and is printed).
 */
import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {PgCluster, makeServerOwnedDir, startPostgres} from '../test/helpers/postgres'
import {DBB, ROOT, median} from './measure'

const run = promisify(execFile)
// The test clusters use the default wal_segment_size.
const SEGMENT_BYTES = 16 * 1024 * 1024

type Mode = 'sync' | 'async'

function archiveCommand(mode: Mode, storeDir: string, spoolDir: string): string {
  const settings = `BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir}`
  return `${settings} ${process.execPath} ${DBB} wal push ${mode === 'async' ? '--async ' : ''}%p`
}

async function setArchiveCommand(cluster: PgCluster, command: string): Promise<void> {
  await cluster.psql(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`)
  await cluster.psql('SELECT pg_reload_conf()')
}

const segmentNumber = (name: string) => Number.parseInt(name.slice(8, 16), 16) * 0x100 + Number.parseInt(name.slice(16, 24), 16)

async function storedCount(storeDir: string): Promise<number> {
  const entries = await fs.readdir(path.join(storeDir, 'wal')).catch(() => [] as string[])
  return entries.filter((entry) => /^[0-9A-F]{24}\.gz$/.test(entry)).length
}

/** Stops the detached uploader (it outlives the measurement by its idle time) so its spool can be removed. */
async function stopUploader(spoolDir: string): Promise<void> {
  const pid = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
  if (!(pid > 0)) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }

  for (let waited = 0; waited < 10_000; waited += 100) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }

    await sleep(100)
  }
}

async function freshDirs(label: string): Promise<{storeDir: string; spoolDir: string}> {
  const storeDir = await makeServerOwnedDir(`dbb-bench-wal-${label}-store-`)
  const spoolDir = await makeServerOwnedDir(`dbb-bench-wal-${label}-spool-`)
  return {storeDir, spoolDir}
}

async function sustained(cluster: PgCluster, mode: Mode, backlogMb: number): Promise<{segments: number; seconds: number; mbPerSecond: number}> {
  const {storeDir, spoolDir} = await freshDirs(mode)
  await setArchiveCommand(cluster, '')
  await cluster.psql('SELECT pg_switch_wal()')
  await sleep(500)
  const rows = Math.round((backlogMb * 1024 * 1024) / 200)
  await cluster.psql(`DROP TABLE IF EXISTS backlog; CREATE TABLE backlog AS SELECT g AS id, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) AS payload FROM generate_series(1, ${rows}) g`)
  const last = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  const firstReady = (await fs.readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'))).filter((entry) => entry.endsWith('.ready')).length

  const started = process.hrtime.bigint()
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir))
  for (;;) {
    const stored = await storedCount(storeDir)
    const archived = await cluster.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')
    if (archived >= last && stored >= firstReady) break
    await sleep(100)
  }

  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await setArchiveCommand(cluster, '')
  await stopUploader(spoolDir)
  await fs.rm(storeDir, {recursive: true, force: true})
  await fs.rm(spoolDir, {recursive: true, force: true})
  return {segments: firstReady, seconds, mbPerSecond: (firstReady * SEGMENT_BYTES) / 1024 / 1024 / seconds}
}

async function lagUnderPgbench(cluster: PgCluster, mode: Mode, seconds: number): Promise<{walMbPerSecond: number; medianLag: number; maxLag: number}> {
  const {storeDir, spoolDir} = await freshDirs(`lag-${mode}`)
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir))
  const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
  const before = await cluster.psql('SELECT pg_current_wal_lsn()')
  const bench = run(path.join(cluster.binDir, 'pgbench'), ['-n', '-c', '4', '-j', '2', '-T', String(seconds), 'postgres'], {env: pgEnv})
  let finished = false
  void bench.finally(() => (finished = true))
  const lags: number[] = []
  while (!finished) {
    const [current, archived] = (await cluster.psql('SELECT pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')).split('|')
    if (archived) lags.push(segmentNumber(current) - segmentNumber(archived) - 1)
    await sleep(250)
  }

  await bench
  const bytes = Number(await cluster.psql(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${before}')`))
  await setArchiveCommand(cluster, '')
  await stopUploader(spoolDir)
  await fs.rm(storeDir, {recursive: true, force: true})
  await fs.rm(spoolDir, {recursive: true, force: true})
  return {walMbPerSecond: bytes / 1024 / 1024 / seconds, medianLag: median(lags.map((lag) => Math.max(0, lag))), maxLag: Math.max(0, ...lags)}
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const option = (name: string, fallback: string) => {
    const index = argv.indexOf(name)
    return index === -1 ? fallback : argv[index + 1]
  }

  const backlogMb = Number(option('--backlog-mb', '512'))
  const pgbenchSeconds = Number(option('--pgbench-seconds', '30'))
  const cluster = await startPostgres({settings: {wal_level: 'replica', archive_mode: 'on', archive_command: "''", max_wal_size: '8GB', checkpoint_timeout: '30min'}})
  try {
    const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
    await run(path.join(cluster.binDir, 'pgbench'), ['-i', '-q', '-s', '10', 'postgres'], {env: pgEnv})
    const rows: string[] = []
    for (const mode of ['sync', 'async'] as const) {
      const result = await sustained(cluster, mode, backlogMb)
      rows.push(`| sustained archiving, ${mode} | ${result.segments} segments (${backlogMb} MB backlog) in ${result.seconds.toFixed(1)} s | **${result.mbPerSecond.toFixed(1)} MB/s** |`)
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    for (const mode of ['sync', 'async'] as const) {
      const result = await lagUnderPgbench(cluster, mode, pgbenchSeconds)
      rows.push(`| archiver lag under pgbench (-c 4, ${pgbenchSeconds} s), ${mode} | pgbench wrote ${result.walMbPerSecond.toFixed(1)} MB/s of WAL | median **${result.medianLag}**, max **${result.maxLag}** segments behind |`)
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    const note = option('--note', '')
    const generated = [`Measured ${new Date().toISOString()}${note ? ` (${note})` : ''}:`, '', '| measurement | work | result |', '| --- | --- | --- |', ...rows, ''].join('\n')
    process.stdout.write(generated)
    const report = path.join(ROOT, 'BENCHMARKS.md')
    const existing = await fs.readFile(report, 'utf8')
    const [start, end] = ['<!-- bench-wal:start (generated by npm run bench:wal) -->', '<!-- bench-wal:end -->']
    const from = existing.indexOf(start)
    const to = existing.indexOf(end)
    if (from !== -1 && to > from) await fs.writeFile(report, `${existing.slice(0, from + start.length)}\n${generated}${existing.slice(to)}`)
  } finally {
    await cluster.destroy()
  }

}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`)
  process.exitCode = 1
})
