/**
 * `npm run bench:wal`: WAL archiving throughput and archiver lag (issue 13, item 5), with a real
 * PostgreSQL and local storage. Prints a Markdown table for BENCHMARKS.md ("WAL archiving").
 *
 *  - Sustained archiving: PostgreSQL first writes a backlog of WAL with archive_command empty (so
 *    the segments wait in pg_wal as `.ready`); then archive_command is set to dbb and the time until
 *    storage holds every segment is measured. Sync: `dbb wal push %p`; async: `dbb wal push --async
 *    %p` (spool + detached uploader with read-ahead); async-sh: the same through bin/dbb-wal (no
 *    Node start for a segment the read-ahead stored), with gzip and with COMPRESSION=zstd. MB/s =
 *    segments waiting × 16 MiB / that time; the uploader's CPU per segment from /proc. That drain
 *    starts cold (the first push starts Node and the uploader: ≈ 1–1.8 s before the first segment
 *    is stored), so the steady rate is reported too: the segments stored after the third, over the
 *    time from the third one's arrival in storage to the last one's (the files' mtimes), which is
 *    what an archiver already running sustains.
 *  - Per-call cost of a prepared call (stored ahead / queued) for each foreground, CPU and wall.
 *  - Archiver lag under pgbench at full speed: pgbench runs with archiving on; every 250 ms the
 *    distance in segments between the segment being written and the last one archived is sampled.
 *
 * Flags: --backlog-mb N (default 1024), --pgbench-seconds N (default 30), --calls N (default 20), --note TEXT. The table
 * replaces the part of BENCHMARKS.md between the bench-wal markers (and is printed).
 */
import {execFile, spawnSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {PgCluster, makeServerOwnedDir, startPostgres} from '../test/helpers/postgres'
import {fileIdentity, identityLine, queueDirFor, storageIdentity} from '../src/wal/foreground'
import {DBB, ROOT, median} from './measure'

const run = promisify(execFile)
// The test clusters use the default wal_segment_size.
const SEGMENT_BYTES = 16 * 1024 * 1024

const FOREGROUND = path.join(ROOT, 'bin', 'dbb-wal')

/**
 * sync: `dbb wal push %p`; async: `dbb wal push --async %p` (a Node start per segment);
 * async-sh: `dbb-wal push --async %p` (bin/dbb-wal, no Node start when the read-ahead stored the
 * segment), gzip or zstd (COMPRESSION) for the stored copy.
 */
type Mode = 'sync' | 'async' | 'async-sh' | 'async-sh-zstd'

function archiveCommand(mode: Mode, storeDir: string, spoolDir: string): string {
  const settings = `BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir}${mode === 'async-sh-zstd' ? ' COMPRESSION=zstd' : ''}`
  if (mode === 'sync' || mode === 'async') return `${settings} ${process.execPath} ${DBB} wal push ${mode === 'async' ? '--async ' : ''}%p`
  return `${settings} DBB_NODE=${process.execPath} ${FOREGROUND} push --async %p`
}

/** CPU seconds (user + sys) of a live process, from /proc (clock ticks of 10 ms). */
async function processCpuSeconds(pid: number): Promise<number | undefined> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  if (stat === undefined) return undefined
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** CPU seconds (user + sys) of this process's children that were waited for: what spawnSync'd calls used. */
async function childrenCpuSeconds(): Promise<number> {
  const fields = (await fs.readFile('/proc/self/stat', 'utf8')).split(') ')[1].split(' ')
  return (Number(fields[13]) + Number(fields[14])) / 100
}

const loadAverage = async () => (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')

/**
 * The cost of one archive_command / restore_command call that the background already prepared,
 * per foreground: `calls` runs each, CPU (user + sys, summed over the calls) and wall per call.
 */
async function perCallCosts(calls: number): Promise<string[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-bench-call-'))
  const name = '000000010000000000000010'
  const walDir = path.join(dir, 'pg_wal')
  const spoolDir = path.join(dir, 'spool')
  const storeDir = path.join(dir, 'store')
  await fs.mkdir(path.join(spoolDir, 'uploaded'), {recursive: true})
  await fs.mkdir(walDir)
  await fs.mkdir(storeDir)
  await fs.writeFile(path.join(walDir, name), Buffer.alloc(SEGMENT_BYTES, 1))
  const identity = fileIdentity(await fs.stat(path.join(walDir, name), {bigint: true}))
  const queue = queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
  await fs.mkdir(queue, {recursive: true})
  // This process stands in for the live prefetcher (its pid in the lock, the identity it publishes), so none is started.
  await fs.writeFile(path.join(queue, 'uploader.pid'), `${process.pid}\n\n`)
  await fs.writeFile(path.join(queue, 'identity'), `${identityLine(storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))}\n`)
  const env = {...process.env, BACKUP_LOCAL_DIR: storeDir, WAL_SPOOL_DIR: spoolDir, DBB_NODE: process.execPath}
  const fetchArgs = ['fetch', '--storage', 'local', '--local-dir', storeDir, name, path.join(walDir, 'RECOVERYXLOG')]
  const cases: {label: string; command: string; args: string[]; prepare: () => Promise<void>}[] = [
    {label: '`node -e 0` (the floor of a Node foreground)', command: process.execPath, args: ['-e', '0'], prepare: async () => {}},
    {label: '`dbb wal push --async`, stored ahead (Node foreground)', command: process.execPath, args: [DBB, 'wal', 'push', '--async', path.join(walDir, name)], prepare: () => fs.writeFile(path.join(spoolDir, 'uploaded', name), `${identity}\n`)},
    {label: '`dbb-wal push --async`, stored ahead (sh foreground)', command: FOREGROUND, args: ['push', '--async', path.join(walDir, name)], prepare: () => fs.writeFile(path.join(spoolDir, 'uploaded', name), `${identity}\n`)},
    {label: '`dbb wal fetch`, queued (Node foreground)', command: process.execPath, args: [DBB, 'wal', ...fetchArgs], prepare: () => fs.writeFile(path.join(queue, name), 'x')},
    {label: '`dbb-wal fetch`, queued (sh foreground)', command: FOREGROUND, args: fetchArgs, prepare: () => fs.writeFile(path.join(queue, name), 'x')},
  ]
  const rows: string[] = []
  try {
    for (const {label, command, args, prepare} of cases) {
      let wallMs = 0
      const cpuBefore = await childrenCpuSeconds()
      for (let call = 0; call < calls; call++) {
        await prepare()
        await fs.rm(path.join(walDir, 'RECOVERYXLOG'), {force: true})
        const started = process.hrtime.bigint()
        const result = spawnSync(command, args, {env, stdio: ['ignore', 'pipe', 'pipe']})
        wallMs += Number(process.hrtime.bigint() - started) / 1e6
        if (result.status !== 0 || (label.includes('stored ahead') && !/Already stored/.test(String(result.stdout))) || (label.includes('queued') && !/prefetch queue/.test(String(result.stdout)))) {
          throw new Error(`${label}: exit ${result.status}: ${String(result.stdout)}${String(result.stderr)}`)
        }
      }

      const cpu = (await childrenCpuSeconds()) - cpuBefore
      rows.push(`| ${label} | ${((cpu * 1000) / calls).toFixed(0)} ms | ${(wallMs / calls).toFixed(0)} ms |`)
      process.stderr.write(`${rows.at(-1)}\n`)
    }
  } finally {
    await fs.rm(dir, {recursive: true, force: true})
  }

  return rows
}

async function setArchiveCommand(cluster: PgCluster, command: string): Promise<void> {
  await cluster.psql(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`)
  await cluster.psql('SELECT pg_reload_conf()')
}

const segmentNumber = (name: string) => Number.parseInt(name.slice(8, 16), 16) * 0x100 + Number.parseInt(name.slice(16, 24), 16)

const storedSegments = async (storeDir: string) => (await fs.readdir(path.join(storeDir, 'wal')).catch(() => [] as string[])).filter((entry) => /^[0-9A-F]{24}\.(gz|zst)$/.test(entry))

async function storedCount(storeDir: string): Promise<number> {
  return (await storedSegments(storeDir)).length
}

/** When each stored segment arrived (its file's mtime: written, fsynced, then renamed in), in order. */
async function storedArrivals(storeDir: string): Promise<number[]> {
  const times = await Promise.all((await storedSegments(storeDir)).map(async (entry) => (await fs.stat(path.join(storeDir, 'wal', entry))).mtimeMs))
  return times.sort((a, b) => a - b)
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

async function sustained(cluster: PgCluster, mode: Mode, backlogMb: number): Promise<{segments: number; seconds: number; mbPerSecond: number; steadyMbPerSecond: number; firstStoredSeconds: number; uploaderCpuPerSegment?: number}> {
  const {storeDir, spoolDir} = await freshDirs(mode)
  await setArchiveCommand(cluster, '')
  await cluster.psql('SELECT pg_switch_wal()')
  await sleep(500)
  const rows = Math.round((backlogMb * 1024 * 1024) / 200)
  await cluster.psql(`DROP TABLE IF EXISTS backlog; CREATE TABLE backlog AS SELECT g AS id, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) AS payload FROM generate_series(1, ${rows}) g`)
  const last = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  const firstReady = (await fs.readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'))).filter((entry) => entry.endsWith('.ready')).length

  const started = process.hrtime.bigint()
  const startedAtMs = Date.now()
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir))
  for (;;) {
    const stored = await storedCount(storeDir)
    const archived = await cluster.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')
    if (archived >= last && stored >= firstReady) break
    await sleep(100)
  }

  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const arrivals = await storedArrivals(storeDir)
  const steadyMbPerSecond = arrivals.length > 5 ? ((arrivals.length - 3) * SEGMENT_BYTES) / 1024 / 1024 / ((arrivals.at(-1)! - arrivals[2]) / 1000) : Number.NaN
  await setArchiveCommand(cluster, '')
  // The uploader that ran the whole drain (started by the first push): its CPU per segment stored.
  const uploaderPid = Number((await fs.readFile(path.join(spoolDir, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
  const uploaderCpu = uploaderPid > 0 ? await processCpuSeconds(uploaderPid) : undefined
  await stopUploader(spoolDir)
  await fs.rm(storeDir, {recursive: true, force: true})
  await fs.rm(spoolDir, {recursive: true, force: true})
  return {segments: firstReady, seconds, mbPerSecond: (firstReady * SEGMENT_BYTES) / 1024 / 1024 / seconds, steadyMbPerSecond, firstStoredSeconds: (arrivals[0] - startedAtMs) / 1000, uploaderCpuPerSegment: uploaderCpu === undefined ? undefined : uploaderCpu / firstReady}
}

/**
 * pgbench's own TPC-B writes little WAL (≈ 1 MB/s here, commit flushes or not); `bulk` runs a
 * script of 2,000-row inserts instead, which writes WAL as fast as the server can: the lag an
 * archiver shows under a load it can barely follow.
 */
const BULK_INSERT = 'INSERT INTO lag_load SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(1, 2000) g;\n'

async function lagUnderPgbench(cluster: PgCluster, mode: Mode, seconds: number, workload: 'tpcb' | 'bulk'): Promise<{walMbPerSecond: number; medianLag: number; maxLag: number}> {
  const {storeDir, spoolDir} = await freshDirs(`lag-${mode}`)
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir))
  const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
  const before = await cluster.psql('SELECT pg_current_wal_lsn()')
  let script: string | undefined
  if (workload === 'bulk') {
    await cluster.psql('DROP TABLE IF EXISTS lag_load; CREATE TABLE lag_load (id int, payload text)')
    script = path.join(storeDir, '..', `bulk-${process.pid}.sql`)
    await fs.writeFile(script, BULK_INSERT)
  }

  const args = workload === 'bulk' ? ['-n', '-c', '2', '-j', '2', '-f', script!, '-T', String(seconds), 'postgres'] : ['-n', '-c', '4', '-j', '2', '-T', String(seconds), 'postgres']
  const bench = run(path.join(cluster.binDir, 'pgbench'), args, {env: pgEnv})
  let finished = false
  void bench.finally(() => (finished = true))
  const lags: number[] = []
  while (!finished) {
    const [current, archived] = (await cluster.psql('SELECT pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')).split('|')
    if (archived) lags.push(segmentNumber(current) - segmentNumber(archived) - 1)
    await sleep(250)
  }

  await bench
  if (script) await fs.rm(script, {force: true})
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

  const backlogMb = Number(option('--backlog-mb', '1024'))
  const pgbenchSeconds = Number(option('--pgbench-seconds', '30'))
  const cluster = await startPostgres({settings: {wal_level: 'replica', archive_mode: 'on', archive_command: "''", max_wal_size: '8GB', checkpoint_timeout: '30min'}})
  try {
    const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
    await run(path.join(cluster.binDir, 'pgbench'), ['-i', '-q', '-s', '10', 'postgres'], {env: pgEnv})
    const rows: string[] = []
    const loadAtStart = await loadAverage()
    for (const mode of ['sync', 'async', 'async-sh', 'async-sh-zstd'] as const) {
      const result = await sustained(cluster, mode, backlogMb)
      const uploader = result.uploaderCpuPerSegment === undefined ? '' : ` (uploader ${result.uploaderCpuPerSegment.toFixed(2)} s CPU a segment)`
      rows.push(
        `| sustained archiving, ${mode} | ${result.segments} segments (${backlogMb} MB backlog) in ${result.seconds.toFixed(1)} s, the first stored after ${result.firstStoredSeconds.toFixed(1)} s${uploader}, load ${await loadAverage()} | **${result.mbPerSecond.toFixed(1)} MB/s** from a cold start; **${result.steadyMbPerSecond.toFixed(1)} MB/s** steady (after the third segment) |`,
      )
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    for (const [mode, workload] of [['sync', 'tpcb'], ['async-sh', 'tpcb'], ['async-sh-zstd', 'tpcb'], ['sync', 'bulk'], ['async-sh', 'bulk'], ['async-sh-zstd', 'bulk']] as const) {
      const result = await lagUnderPgbench(cluster, mode, pgbenchSeconds, workload)
      const load = workload === 'tpcb' ? 'pgbench (-c 4, TPC-B)' : 'pgbench (-c 2, 2,000-row inserts)'
      rows.push(`| archiver lag under ${load}, ${pgbenchSeconds} s, ${mode} | pgbench wrote ${result.walMbPerSecond.toFixed(1)} MB/s of WAL | median **${result.medianLag}**, max **${result.maxLag}** segments behind |`)
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    const calls = await perCallCosts(Number(option('--calls', '20')))
    const note = option('--note', '')
    const generated = [
      `Measured ${new Date().toISOString()}${note ? ` (${note})` : ''} (load at start ${loadAtStart}, at the end ${await loadAverage()}):`,
      '',
      '| measurement | work | result |',
      '| --- | --- | --- |',
      ...rows,
      '',
      'One prepared call (16 MiB segment, local storage), averaged over the calls:',
      '',
      '| call | CPU (user + sys) | wall |',
      '| --- | --- | --- |',
      ...calls,
      '',
    ].join('\n')
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
