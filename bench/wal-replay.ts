/**
 * `npm run bench:wal-replay`: issue 13 item 5 — replay of archived WAL through `dbb wal fetch`
 * (dbb restore's own restore_command, prefetch on) against replay of the same WAL already in
 * pg_wal. A real PostgreSQL writes --mb MB of WAL after a base backup (archived through
 * `dbb-wal push --async`, twice: once with the default gzip and once with COMPRESSION=zstd into a
 * second store); the base backup is restored, in each of --rounds interleaved rounds: (A) with the
 * segments decompressed into pg_wal beforehand and restore_command = 'false', (B) with dbb
 * restore's own restore_command (`dbb-wal fetch …`, the sh foreground) on the gzip archive, (F) the
 * floor of any restore_command here: one `mv` of a segment decompressed beforehand, (B')
 * the same on the zstd archive, and (C) with the Node foreground (`node bin/run.js wal fetch …`),
 * WAL_SPOOL_DIR in the server's environment for all three; then (A) and (B) again with `fsync = on`
 * (the others run with the test clusters' `fsync = off`, which makes the pg_wal replay faster
 * and so the ratio stricter), B's ratio taken against that A. Each time is from `pg_ctl start` to the
 * end of recovery; the ratio B/A within a round is the figure of the issue (target ≤ 1.3), and the
 * report gives its median over the rounds. The table replaces the part of BENCHMARKS.md between
 * the bench-wal-replay markers.
 *
 * Flags: --mb N (default 1024: 1 GiB of WAL, the issue's figure), --rounds N (default 3: interleaved,
 * medians reported), --note TEXT, --only LABEL,… (those variants alone, each against its baseline
 * when that is among them; printed, not written to BENCHMARKS.md), --compare DIR (another built
 * checkout's bin/dbb-wal in the same rounds; printed only).
 */
import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'
import {gunzipSync} from 'node:zlib'

import {walForegroundFetchCommand} from '../src/restore/recovery-config'
import {isRoot, makeServerOwnedDir, startPostgres} from '../test/helpers/postgres'
import {startRestoredServer} from '../test/helpers/wal'
import {DBB, ROOT} from './measure'

const run = promisify(execFile)

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const index = argv.indexOf('--mb')
  const megabytes = index === -1 ? 1024 : Number(argv[index + 1])
  const noteIndex = argv.indexOf('--note')
  const note = noteIndex === -1 ? '' : argv[noteIndex + 1]
  const roundsIndex = argv.indexOf('--rounds')
  const rounds = roundsIndex === -1 ? 3 : Number(argv[roundsIndex + 1])
  // --only pgwal-fsync,fetch-fsync: those variants alone (a quick A/B while changing one thing);
  // the table is printed, and BENCHMARKS.md keeps the last full run.
  const onlyIndex = argv.indexOf('--only')
  const only = onlyIndex === -1 ? undefined : argv[onlyIndex + 1].split(',')
  // --compare DIR: another built dbb checkout (git worktree add DIR <commit>; npm run build there)
  // whose bin/dbb-wal replays too, in the same rounds — an A/B that the machine's drift between
  // runs minutes apart cannot blur. Adds the variants fetch@ and fetch-fsync@.
  const compareIndex = argv.indexOf('--compare')
  const compare = compareIndex === -1 ? undefined : path.resolve(argv[compareIndex + 1])
  const loadAverage = async () => (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')
  const loadAtStart = await loadAverage()
  const storeDir = await makeServerOwnedDir('dbb-bench-replay-store-')
  const spoolDir = await makeServerOwnedDir('dbb-bench-replay-spool-')
  const fetchSpool = await makeServerOwnedDir('dbb-bench-replay-fetch-')
  // The same WAL archived a second time with COMPRESSION=zstd (the README's advice for busy servers).
  const zstdStoreDir = await makeServerOwnedDir('dbb-bench-replay-store-zstd-')
  const zstdSpoolDir = await makeServerOwnedDir('dbb-bench-replay-spool-zstd-')
  const push = (env: string) => `${env} DBB_NODE=${process.execPath} ${path.join(ROOT, 'bin', 'dbb-wal')} push --async %p`
  const cluster = await startPostgres({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      max_wal_size: '8GB',
      checkpoint_timeout: '30min',
      archive_command: `'${push(`BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir}`)} && ${push(`COMPRESSION=zstd BACKUP_LOCAL_DIR=${zstdStoreDir} WAL_SPOOL_DIR=${zstdSpoolDir}`)}'`,
    },
  })
  const dirs: string[] = []
  try {
    const dbb = (args: string[], env: Record<string, string>) => run(process.execPath, [DBB, ...args], {env: {...process.env, ...env}, maxBuffer: 16 * 1024 * 1024})
    const backup = JSON.parse((await dbb(['backup', 'run', '--type', 'base', '--json'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})).stdout).metadata as {id: string; firstWalSegment: string}
    // One base backup for both archives: each replay then starts from the same checkpoint.
    for (const key of [backup.id, `${backup.id}.meta.json`]) await run('cp', ['-p', path.join(storeDir, key), path.join(zstdStoreDir, key)])
    // Inserts until the server has written --mb of WAL (measured by LSN, not guessed from a row count).
    await cluster.psql('CREATE TABLE replayed (id int, payload text)')
    const startLsn = await cluster.psql('SELECT pg_current_wal_lsn()')
    for (let batch = 0; ; batch++) {
      await cluster.psql(`INSERT INTO replayed SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(${batch * 500_000 + 1}, ${(batch + 1) * 500_000}) g`)
      if (Number(await cluster.psql(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${startLsn}')`)) >= megabytes * 1024 * 1024) break
    }

    await cluster.psql('INSERT INTO replayed VALUES (0, $$last$$)')
    const last = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
    // Acknowledged by both pushes (spooled), then stored by both uploaders.
    const stored = (file: string) => fs.access(file).then(() => true, () => false)
    for (;;) {
      if ((await cluster.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')) >= last && (await stored(path.join(storeDir, 'wal', `${last}.gz`))) && (await stored(path.join(zstdStoreDir, 'wal', `${last}.zst`)))) break
      await sleep(500)
    }

    const expected = await cluster.psql('SELECT count(*) FROM replayed')
    await cluster.stop()
    const segments = (await fs.readdir(path.join(storeDir, 'wal'))).filter((entry) => /^[0-9A-F]{24}\.gz$/.test(entry) && entry >= backup.firstWalSegment).sort()
    process.stderr.write(`${segments.length} segments archived after the base backup\n`)

    const replay = async (label: string, restoreArgs: string[], prepare: (dataDir: string) => Promise<void>, env: Record<string, string>, store: string, conf = '') => {
      const dataDir = await makeServerOwnedDir(`dbb-bench-replay-${label}-`)
      dirs.push(dataDir)
      await dbb(['restore', '--type', 'base', 'latest', '--pgdata', dataDir, '--force', ...restoreArgs], {BACKUP_LOCAL_DIR: store})
      await prepare(dataDir)
      // The test clusters run with fsync = off (test/helpers/postgres.ts); a variant may set it back.
      if (conf) await fs.appendFile(path.join(dataDir, 'postgresql.conf'), `\n${conf}\n`)
      // The server's environment reaches restore_command (the helper starts it with this process's).
      // Written back before the clock starts: dirty pages of the previous round (a gigabyte of WAL) are
      // not this round's disk traffic.
      await run('sync', [])
      Object.assign(process.env, env)
      const started = process.hrtime.bigint()
      const server = await startRestoredServer(cluster, dataDir)
      for (const name of Object.keys(env)) delete process.env[name]
      try {
        // The end of recovery from the server's log, read every 20 ms: polling with psql (a process
        // and a connection every 50 ms) took CPU from the replay it measured, and most from the
        // restore_command runs, which start programs themselves.
        for (;;) {
          if (/database system is ready to accept connections/.test(await fs.readFile(server.logFile, 'utf8'))) break
          await sleep(20)
        }

        const seconds = Number(process.hrtime.bigint() - started) / 1e9
        const count = await server.psql('SELECT count(*) FROM replayed')
        if (count !== expected) throw new Error(`${label}: ${count} rows after replay, expected ${expected}`)
        const log = await fs.readFile(server.logFile, 'utf8')
        const fromQueue = (log.match(/from the prefetch queue/g) ?? []).length
        // PostgreSQL's own account of the redo loop: its wall time, and the startup process's CPU in it.
        const redo = /redo done at .*CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s/.exec(log)
        return {seconds, fromQueue, redoSeconds: Number(redo?.[3] ?? Number.NaN), redoCpuSeconds: Number(redo?.[1] ?? Number.NaN) + Number(redo?.[2] ?? Number.NaN)}
      } finally {
        await server.stop()
        // About a gigabyte each: removed as soon as the round is measured.
        await fs.rm(dataDir, {recursive: true, force: true})
        await fs.rm(`${dataDir}.log`, {force: true})
      }
    }

    const decompressInto = async (dataDir: string, directory: string) => {
      const {uid, gid} = await fs.stat(dataDir)
      for (const entry of segments) {
        const target = path.join(directory, entry.slice(0, 24))
        await fs.writeFile(target, gunzipSync(await fs.readFile(path.join(storeDir, 'wal', entry))), {mode: 0o600})
        if (isRoot) await fs.chown(target, uid, gid)
      }
    }

    const intoPgWal = (dataDir: string) => decompressInto(dataDir, path.join(dataDir, 'pg_wal'))
    // The floor of any restore_command on this machine: the segments already decompressed beside
    // the cluster, restore_command one `mv` (a sh and one program per segment, as bin/dbb-wal's
    // fastest answer), no download, no check, no prefetcher taking CPU. What the replay costs
    // beyond this is dbb's; up to it, PostgreSQL's way of asking.
    const staged = `${fetchSpool}-staged`
    const intoStaged = async (dataDir: string) => {
      await fs.rm(staged, {recursive: true, force: true})
      await fs.mkdir(staged, {mode: 0o700})
      if (isRoot) await fs.chown(staged, (await fs.stat(dataDir)).uid, (await fs.stat(dataDir)).gid)
      await decompressInto(dataDir, staged)
    }

    // Every run starts with an empty queue and no prefetcher, as a restore does.
    const emptyFetchSpool = async () => {
      for (const queue of await fs.readdir(path.join(fetchSpool, 'fetch-queue')).catch(() => [] as string[])) {
        const pid = Number((await fs.readFile(path.join(fetchSpool, 'fetch-queue', queue, 'uploader.pid'), 'utf8').catch(() => '')).split('\n')[0])
        if (pid > 0) await run('kill', [String(pid)]).catch(() => {})
      }

      await fs.rm(fetchSpool, {recursive: true, force: true})
      await fs.mkdir(fetchSpool, {mode: 0o700})
      if (isRoot) await fs.chown(fetchSpool, (await fs.stat(storeDir)).uid, (await fs.stat(storeDir)).gid)
    }

    const nodeCommand = `${process.execPath} ${DBB} wal fetch --storage local --local-dir ${storeDir} %f %p`
    // `baseline`: the row a variant's ratio is taken against (pg_wal unless it says otherwise).
    const allVariants: Array<{label: string; row: string; args: string[]; prepare: (dataDir: string) => Promise<void>; env: Record<string, string>; store: string; conf?: string; baseline?: string}> = [
      {label: 'pgwal', row: 'WAL already in pg_wal (restore_command = false)', args: ['--restore-command', 'false'], prepare: intoPgWal, env: {}, store: storeDir},
      {label: 'mv-floor', row: 'floor of any restore_command: `mv -f <decompressed>/%f %p` (no download, no check, no prefetcher)', args: ['--restore-command', `mv -f -- ${staged}/%f %p 2>/dev/null`], prepare: intoStaged, env: {}, store: storeDir},
      {label: 'fetch', row: "`dbb-wal fetch` (the sh foreground, sourced: dbb restore's restore_command, WAL_PREFETCH=8), gzip archive (default)", args: [], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool}, store: storeDir},
      {label: 'fetch-zstd', row: '`dbb-wal fetch`, the same WAL archived with `COMPRESSION=zstd`', args: [], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool, COMPRESSION: 'zstd'}, store: zstdStoreDir},
      {label: 'fetch-node', row: '`node bin/run.js wal fetch` (Node foreground, WAL_PREFETCH=8), gzip archive', args: ['--restore-command', nodeCommand], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool}, store: storeDir},
      // With fsync = on, as servers run: PostgreSQL then fsyncs every segment it restores
      // (KeepFileRestoredFromArchive's durable_rename), and its end-of-recovery checkpoint syncs.
      {label: 'pgwal-fsync', row: 'WAL already in pg_wal, `fsync = on` (the rows above run with the test clusters\' `fsync = off`)', args: ['--restore-command', 'false'], prepare: intoPgWal, env: {}, store: storeDir, conf: 'fsync = on'},
      {label: 'fetch-fsync', row: '`dbb-wal fetch`, gzip archive, `fsync = on` (ratio to the row above)', args: [], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool}, store: storeDir, conf: 'fsync = on', baseline: 'pgwal-fsync'},
    ]
    if (compare) {
      const commandFor = (store: string) => walForegroundFetchCommand(process.execPath, path.join(compare, 'bin', 'dbb-wal'), ['--storage', 'local', '--local-dir', store])
      const command = commandFor(storeDir)
      allVariants.push(
        {label: 'fetch@', row: `\`dbb-wal fetch\` of ${compare}, gzip archive`, args: ['--restore-command', command], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool}, store: storeDir},
        {label: 'fetch-zstd@', row: `\`dbb-wal fetch\` of ${compare}, zstd archive`, args: ['--restore-command', commandFor(zstdStoreDir)], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool, COMPRESSION: 'zstd'}, store: zstdStoreDir},
        {label: 'fetch-fsync@', row: `\`dbb-wal fetch\` of ${compare}, gzip archive, \`fsync = on\` (ratio to pg_wal with fsync = on)`, args: ['--restore-command', command], prepare: emptyFetchSpool, env: {WAL_SPOOL_DIR: fetchSpool}, store: storeDir, conf: 'fsync = on', baseline: 'pgwal-fsync'},
      )
    }

    const unknown = only?.filter((label) => !allVariants.some((variant) => variant.label === label)) ?? []
    if (unknown.length > 0) throw new Error(`--only: no variant ${unknown.join(', ')} (there are ${allVariants.map((variant) => variant.label).join(', ')})`)
    const variants = only ? allVariants.filter((variant) => only.includes(variant.label)) : allVariants
    // Interleaved rounds, medians: this machine's speed drifts by tens of percent between minutes,
    // and a ratio of two runs minutes apart measures the drift as much as the replay.
    const results = variants.map(() => [] as Array<{seconds: number; fromQueue: number; redoSeconds: number; redoCpuSeconds: number}>)
    for (let round = 0; round < rounds; round++) {
      for (const [index, variant] of variants.entries()) {
        const result = await replay(variant.label, variant.args, variant.prepare, variant.env, variant.store, variant.conf)
        process.stderr.write(`round ${round + 1}: ${variant.label} ${result.seconds.toFixed(2)} s (redo ${result.redoSeconds} s, startup process CPU ${result.redoCpuSeconds.toFixed(2)} s)\n`)
        results[index].push(result)
      }
    }

    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
    const seconds = results.map((runs) => median(runs.map((run) => run.seconds)))
    const baselineOf = (index: number) => Math.max(0, variants.findIndex((variant) => variant.label === (variants[index].baseline ?? 'pgwal')))
    const ratios = (index: number) => results[index].map((run, round) => run.seconds / results[baselineOf(index)][round].seconds)
    // The headline is the median of the per-round ratios: each round's runs are minutes apart at most.
    const cell = (index: number) =>
      baselineOf(index) === index ? '1×' : `**${median(ratios(index)).toFixed(2)}×** (rounds: ${ratios(index).map((ratio) => `${ratio.toFixed(2)}×`).join(', ')})`
    const generated = [
      `Measured ${new Date().toISOString()}${note ? ` (${note})` : ''}: replay of ${segments.length} segments (${(segments.length * 16).toLocaleString('en')} MiB of WAL), ${rounds} interleaved rounds, medians; load at start ${loadAtStart}, at the end ${await loadAverage()}:`,
      '',
      '| replay | wall (start → end of recovery), median | ratio to pg_wal in the same round, median (target ≤ 1.3×) | redo loop (PostgreSQL\'s figure), median | startup process CPU in it, median | segments from the prefetch queue |',
      '| --- | --- | --- | --- | --- | --- |',
      ...variants.map(
        (variant, index) =>
          `| ${variant.row} | ${seconds[index].toFixed(1)} s | ${cell(index)} | ${median(results[index].map((run) => run.redoSeconds)).toFixed(1)} s | ${median(results[index].map((run) => run.redoCpuSeconds)).toFixed(1)} s | ${variants[index].prepare === intoPgWal ? '—' : results[index].map((run) => run.fromQueue).join(', ')} |`,
      ),
      '',
    ].join('\n')
    process.stdout.write(`\n${generated}`)
    const report = path.join(ROOT, 'BENCHMARKS.md')
    const existing = await fs.readFile(report, 'utf8')
    const [start, end] = ['<!-- bench-wal-replay:start (generated by npm run bench:wal-replay) -->', '<!-- bench-wal-replay:end -->']
    const from = existing.indexOf(start)
    const to = existing.indexOf(end)
    if (!only && !compare && from !== -1 && to > from) await fs.writeFile(report, `${existing.slice(0, from + start.length)}\n${generated}${existing.slice(to)}`)
  } finally {
    await cluster.destroy()
    for (const dir of [...dirs, ...dirs.map((dir) => `${dir}.log`), storeDir, spoolDir, fetchSpool, `${fetchSpool}-staged`, zstdStoreDir, zstdSpoolDir]) await fs.rm(dir, {recursive: true, force: true})
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`)
  process.exitCode = 1
})
