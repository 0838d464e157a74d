/**
 * `npm run bench:wal`: WAL archiving throughput and archiver lag (issue 13, item 5), with a real
 * PostgreSQL and local storage. Prints a Markdown table for BENCHMARKS.md ("WAL archiving").
 *
 *  - Sustained archiving: PostgreSQL first writes a backlog of WAL with archive_command empty (so
 *    the segments wait in pg_wal as `.ready`); then archive_command is set to dbb and the time until
 *    storage holds every segment is measured. Sync: `dbb wal push %p`; async: `dbb wal push --async
 *    %p` (spool + detached uploader with read-ahead); async-sh: the same through bin/dbb-wal (no
 *    Node start for a segment the read-ahead stored), with gzip and with COMPRESSION=zstd;
 *    async-serve: the same sh push beside a running `dbb serve` that holds the spool and reads ahead
 *    pg_wal (WAL_READ_AHEAD_DIR). MB/s =
 *    segments waiting × 16 MiB / that time; the uploader's CPU per segment from /proc. That drain
 *    starts cold (the first push starts Node and the uploader: ≈ 1–1.8 s before the first segment
 *    is stored), so the steady rate is reported too: the segments stored after the third, over the
 *    time from the third one's arrival in storage to the last one's (the files' mtimes), which is
 *    what an archiver already running sustains.
 *  - Per-call cost of a prepared call (stored ahead / queued) for each foreground, CPU and wall.
 *  - Archiver lag under pgbench at full speed: pgbench runs with archiving on; every 250 ms the
 *    segments finished and not yet archived (pg_wal's `.ready` marks) are counted.
 *
 * Flags: --backlog-mb N (default 1024), --pgbench-seconds N (default 30), --calls N (default 20), --note TEXT. The table
 * replaces the part of BENCHMARKS.md between the bench-wal markers (and is printed). For an A/B while
 * changing the archiving path (printed, not written to BENCHMARKS.md): --only MODE,… (those modes'
 * rows alone), --compare DIR (another built checkout archives too, in the same rounds), --rounds N
 * (interleaved).
 */
import {execFile, spawnSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {PgCluster, makeServerOwnedDir, startPostgres} from '../test/helpers/postgres'
import {standInPrefetcher, startServeReadingAhead} from '../test/helpers/wal'
import {fileIdentity, queueDirFor, storageIdentity, uploaderLock} from '../src/wal/foreground'
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
type Mode = 'sync' | 'async' | 'async-sh' | 'async-sh-zstd' | 'async-serve'

function archiveCommand(mode: Mode, storeDir: string, spoolDir: string, root = ROOT): string {
  const settings = `BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir}${mode === 'async-sh-zstd' ? ' COMPRESSION=zstd' : ''}`
  // async-serve: the same sh push, with `dbb serve` (already running) holding the spool instead of a detached uploader.
  if (mode === 'sync' || mode === 'async') return `${settings} ${process.execPath} ${path.join(root, 'bin', 'run.js')} wal push ${mode === 'async' ? '--async ' : ''}%p`
  return `${settings} DBB_NODE=${process.execPath} ${path.join(root, 'bin', 'dbb-wal')} push --async %p`
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
  // This process stands in for the live prefetcher (its lock, the identity it publishes), so none is started.
  standInPrefetcher(queue, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
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
  const pid = uploaderLock(spoolDir)?.pid
  if (pid === undefined) return
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

/**
 * async-serve: `dbb serve` holds the spool before the measurement starts, as a sidecar that runs all
 * the time does (its start is not part of the drain), as the server's OS user (the README's
 * same-host setup: startServeReadingAhead). Stopped with stopUploader (its pid is the lock's).
 */
async function startServe(cluster: PgCluster, storeDir: string, spoolDir: string, root: string): Promise<number> {
  const serve = await startServeReadingAhead(cluster, {storeDir, spoolDir}, {bin: path.join(root, 'bin', 'run.js'), env: {LOG_LEVEL: 'warn'}, stdio: ['ignore', 'ignore', 'inherit']})
  return serve.pid
}

async function freshDirs(label: string): Promise<{storeDir: string; spoolDir: string}> {
  const storeDir = await makeServerOwnedDir(`dbb-bench-wal-${label}-store-`)
  const spoolDir = await makeServerOwnedDir(`dbb-bench-wal-${label}-spool-`)
  return {storeDir, spoolDir}
}

async function sustained(cluster: PgCluster, mode: Mode, backlogMb: number, root = ROOT): Promise<{segments: number; seconds: number; mbPerSecond: number; steadyMbPerSecond: number; firstStoredSeconds: number; uploaderCpuPerSegment?: number}> {
  const {storeDir, spoolDir} = await freshDirs(mode)
  await setArchiveCommand(cluster, '')
  await cluster.psql('SELECT pg_switch_wal()')
  await sleep(500)
  const rows = Math.round((backlogMb * 1024 * 1024) / 200)
  await cluster.psql(`DROP TABLE IF EXISTS backlog; CREATE TABLE backlog AS SELECT g AS id, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) AS payload FROM generate_series(1, ${rows}) g`)
  const last = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
  const firstReady = (await fs.readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'))).filter((entry) => entry.endsWith('.ready')).length

  const cpuBefore = mode === 'async-serve' ? await processCpuSeconds(await startServe(cluster, storeDir, spoolDir, root)) : 0
  const started = process.hrtime.bigint()
  const startedAtMs = Date.now()
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir, root))
  // Storage is polled with a readdir, and PostgreSQL asked only once storage holds the backlog: a psql
  // every 100 ms (a process and a connection) took CPU from the drain it measured, on two cores.
  for (;;) {
    if ((await storedCount(storeDir)) >= firstReady && (await cluster.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')) >= last) break
    await sleep(100)
  }

  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const arrivals = await storedArrivals(storeDir)
  const steadyMbPerSecond = arrivals.length > 5 ? ((arrivals.length - 3) * SEGMENT_BYTES) / 1024 / 1024 / ((arrivals.at(-1)! - arrivals[2]) / 1000) : Number.NaN
  await setArchiveCommand(cluster, '')
  // The uploader that ran the whole drain (started by the first push): its CPU per segment stored.
  const uploaderPid = uploaderLock(spoolDir)?.pid
  const uploaderCpuTotal = uploaderPid === undefined ? undefined : await processCpuSeconds(uploaderPid)
  const uploaderCpu = uploaderCpuTotal === undefined || cpuBefore === undefined ? undefined : uploaderCpuTotal - cpuBefore
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

/** Issue 13's target: at most this many segments waiting to be archived. */
const LAG_TARGET = 2
const LAG_SAMPLE_SECONDS = 0.25

async function lagUnderPgbench(cluster: PgCluster, mode: Mode, seconds: number, workload: 'tpcb' | 'bulk', root = ROOT): Promise<{walMbPerSecond: number; medianLag: number; maxLag: number; withinTargetFrom?: number}> {
  const {storeDir, spoolDir} = await freshDirs(`lag-${mode}`)
  if (mode === 'async-serve') await startServe(cluster, storeDir, spoolDir, root)
  await setArchiveCommand(cluster, archiveCommand(mode, storeDir, spoolDir, root))
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
  // The lag is the segments PostgreSQL finished and has not had archived: its `.ready` marks in
  // pg_wal/archive_status (a segment's mark becomes `.done` when archive_command succeeded), which is
  // what pg_current_wal_lsn() against pg_stat_archiver.last_archived_wal tells, read with a readdir:
  // a psql every 250 ms took CPU from the server and the archiver it measured.
  const waiting = async () => (await fs.readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'))).filter((entry) => entry.endsWith('.ready')).length
  while (!finished) {
    lags.push(await waiting())
    await sleep(LAG_SAMPLE_SECONDS * 1000)
  }

  await bench
  process.stderr.write(`lag samples (${mode}, ${workload}, every ${LAG_SAMPLE_SECONDS} s): ${lags.join(' ')}\n`)
  if (script) await fs.rm(script, {force: true})
  const bytes = Number(await cluster.psql(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${before}')`))
  // Drained by this mode before the next run starts: a backlog left here would be counted as the
  // next mode's lag (it was, before: the sync run's 25–46 segments went on to the gzip run).
  await cluster.psql('SELECT pg_switch_wal()')
  for (let waited = 0; waited < 300_000 && (await waiting()) > 0; waited += 250) await sleep(250)
  await setArchiveCommand(cluster, '')
  await stopUploader(spoolDir)
  await fs.rm(storeDir, {recursive: true, force: true})
  await fs.rm(spoolDir, {recursive: true, force: true})
  // A peak usually sits in the first seconds, the cold start: the first push starts Node and the
  // detached uploader (≈ 1 s, 3–4 segments at 50 MB/s of WAL), which `dbb serve`'s uploader, always
  // running, has not (async-serve). So the row also says from when on the lag stayed within the target.
  const lastAbove = lags.findLastIndex((lag) => lag > LAG_TARGET)
  const withinTargetFrom = lastAbove === -1 ? 0 : lastAbove === lags.length - 1 ? undefined : (lastAbove + 1) * LAG_SAMPLE_SECONDS
  return {walMbPerSecond: bytes / 1024 / 1024 / seconds, medianLag: median(lags), maxLag: Math.max(0, ...lags), withinTargetFrom}
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const option = (name: string, fallback: string) => {
    const index = argv.indexOf(name)
    return index === -1 ? fallback : argv[index + 1]
  }

  const backlogMb = Number(option('--backlog-mb', '1024'))
  const pgbenchSeconds = Number(option('--pgbench-seconds', '30'))
  const allModes = ['sync', 'async', 'async-sh', 'async-sh-zstd', 'async-serve'] as const
  const only = argv.includes('--only') ? option('--only', '').split(',') : undefined
  const unknown = only?.filter((mode) => !(allModes as readonly string[]).includes(mode)) ?? []
  if (unknown.length > 0) throw new Error(`--only: no mode ${unknown.join(', ')} (there are ${allModes.join(', ')})`)
  const modes = only ? allModes.filter((mode) => only.includes(mode)) : allModes
  // --compare DIR: another built checkout (git worktree add DIR <commit>; npm run build there) whose
  // bin/dbb-wal and bin/run.js archive too, in the same rounds (rows marked `@DIR`; printed only).
  const compare = argv.includes('--compare') ? path.resolve(option('--compare', '')) : undefined
  const partial = only !== undefined || compare !== undefined
  const rounds = partial ? Number(option('--rounds', '1')) : 1
  const roots = compare ? [ROOT, compare] : [ROOT]
  const label = (mode: Mode, root: string) => (root === ROOT ? mode : `${mode}@${root}`)
  const cluster = await startPostgres({settings: {wal_level: 'replica', archive_mode: 'on', archive_command: "''", max_wal_size: '8GB', checkpoint_timeout: '30min'}})
  try {
    const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
    await run(path.join(cluster.binDir, 'pgbench'), ['-i', '-q', '-s', '10', 'postgres'], {env: pgEnv})
    const rows: string[] = []
    const loadAtStart = await loadAverage()
    for (const [mode, root] of Array.from({length: rounds}, () => modes.flatMap((mode) => roots.map((root) => [mode, root] as const))).flat()) {
      const result = await sustained(cluster, mode, backlogMb, root)
      const uploader = result.uploaderCpuPerSegment === undefined ? '' : ` (uploader ${result.uploaderCpuPerSegment.toFixed(2)} s CPU a segment)`
      rows.push(
        `| sustained archiving, ${label(mode, root)} | ${result.segments} segments (${backlogMb} MB backlog) in ${result.seconds.toFixed(1)} s, the first stored after ${result.firstStoredSeconds.toFixed(1)} s${uploader}, load ${await loadAverage()} | **${result.mbPerSecond.toFixed(1)} MB/s** from a cold start; **${result.steadyMbPerSecond.toFixed(1)} MB/s** steady (after the third segment) |`,
      )
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    const lagRuns = ([['sync', 'tpcb'], ['async-sh', 'tpcb'], ['async-sh-zstd', 'tpcb'], ['sync', 'bulk'], ['async-sh', 'bulk'], ['async-sh-zstd', 'bulk'], ['async-serve', 'bulk']] as const).filter(([mode]) => (modes as readonly Mode[]).includes(mode))
    for (const [mode, workload, root] of Array.from({length: rounds}, () => lagRuns.flatMap(([mode, workload]) => roots.map((root) => [mode, workload, root] as const))).flat()) {
      const result = await lagUnderPgbench(cluster, mode, pgbenchSeconds, workload, root)
      const load = workload === 'tpcb' ? 'pgbench (-c 4, TPC-B)' : 'pgbench (-c 2, 2,000-row inserts)'
      rows.push(`| archiver lag under ${load}, ${pgbenchSeconds} s, ${label(mode, root)} | pgbench wrote ${result.walMbPerSecond.toFixed(1)} MB/s of WAL | median **${result.medianLag}**, max **${result.maxLag}** segments behind (${result.withinTargetFrom === undefined ? `above ${LAG_TARGET} at the end` : `≤ ${LAG_TARGET} from ${result.withinTargetFrom.toFixed(2)} s on`}) |`)
      process.stderr.write(`${rows.at(-1)}\n`)
    }

    if (partial) return
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
