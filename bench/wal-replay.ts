/**
 * `npm run bench:wal-replay`: issue 13 item 5 — replay of archived WAL through `dbb wal fetch`
 * (dbb restore's own restore_command, prefetch on) against replay of the same WAL already in
 * pg_wal. A real PostgreSQL writes --mb MB of WAL after a base backup (archived through
 * `dbb-wal push --async`); the base backup is restored three times: (A) with the segments
 * decompressed into pg_wal beforehand and restore_command = 'false', (B) with dbb restore's own
 * restore_command (`dbb-wal fetch …`, the sh foreground) and (C) with the Node foreground
 * (`node bin/run.js wal fetch …`), WAL_SPOOL_DIR in the server's environment for both. Each time
 * is from `pg_ctl start` to the end of recovery; the ratio B/A is the figure of the issue (target
 * ≤ 1.3). The table replaces the part of BENCHMARKS.md between the bench-wal-replay markers.
 *
 * Flags: --mb N (default 1024: about 1 GB of WAL, the issue's figure), --note TEXT.
 */
import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'
import {gunzipSync} from 'node:zlib'

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
  const loadAverage = async () => (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')
  const loadAtStart = await loadAverage()
  const storeDir = await makeServerOwnedDir('dbb-bench-replay-store-')
  const spoolDir = await makeServerOwnedDir('dbb-bench-replay-spool-')
  const fetchSpool = await makeServerOwnedDir('dbb-bench-replay-fetch-')
  const cluster = await startPostgres({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      max_wal_size: '8GB',
      checkpoint_timeout: '30min',
      archive_command: `'BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} DBB_NODE=${process.execPath} ${path.join(ROOT, 'bin', 'dbb-wal')} push --async %p'`,
    },
  })
  const dirs: string[] = []
  try {
    const dbb = (args: string[], env: Record<string, string>) => run(process.execPath, [DBB, ...args], {env: {...process.env, ...env}, maxBuffer: 16 * 1024 * 1024})
    const backup = JSON.parse((await dbb(['backup', 'run', '--type', 'base', '--json'], {...cluster.dbbEnv(), BACKUP_LOCAL_DIR: storeDir})).stdout).metadata as {firstWalSegment: string}
    const rows = Math.round((megabytes * 1024 * 1024) / 200)
    await cluster.psql(`CREATE TABLE replayed AS SELECT g AS id, md5(g::text) || md5((g+1)::text) AS payload FROM generate_series(1, ${rows}) g`)
    await cluster.psql('INSERT INTO replayed VALUES (0, $$last$$)')
    const last = await cluster.psql('SELECT pg_walfile_name(pg_switch_wal())')
    for (;;) {
      if ((await cluster.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')) >= last) break
      await sleep(500)
    }

    const expected = await cluster.psql('SELECT count(*) FROM replayed')
    await cluster.stop()
    const segments = (await fs.readdir(path.join(storeDir, 'wal'))).filter((entry) => /^[0-9A-F]{24}\.gz$/.test(entry) && entry >= backup.firstWalSegment).sort()
    process.stderr.write(`${segments.length} segments archived after the base backup\n`)

    const replay = async (label: string, restoreArgs: string[], prepare: (dataDir: string) => Promise<void>, env: Record<string, string>) => {
      const dataDir = await makeServerOwnedDir(`dbb-bench-replay-${label}-`)
      dirs.push(dataDir)
      await dbb(['restore', '--type', 'base', 'latest', '--pgdata', dataDir, '--force', ...restoreArgs], {BACKUP_LOCAL_DIR: storeDir})
      await prepare(dataDir)
      // The server's environment reaches restore_command (the helper starts it with this process's).
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
        const fromQueue = ((await fs.readFile(server.logFile, 'utf8')).match(/from the prefetch queue/g) ?? []).length
        return {seconds, fromQueue}
      } finally {
        await server.stop()
      }
    }

    const inPgWal = await replay(
      'pgwal',
      ['--restore-command', 'false'],
      async (dataDir) => {
        const {uid, gid} = await fs.stat(dataDir)
        for (const entry of segments) {
          const target = path.join(dataDir, 'pg_wal', entry.slice(0, 24))
          await fs.writeFile(target, gunzipSync(await fs.readFile(path.join(storeDir, 'wal', entry))), {mode: 0o600})
          if (isRoot) await fs.chown(target, uid, gid)
        }
      },
      {},
    )
    const loadBefore = [await loadAverage()]
    const fetched = await replay('fetch', [], async () => {}, {WAL_SPOOL_DIR: fetchSpool})
    loadBefore.push(await loadAverage())
    await fs.rm(fetchSpool, {recursive: true, force: true})
    await fs.mkdir(fetchSpool, {mode: 0o700})
    if (isRoot) await fs.chown(fetchSpool, (await fs.stat(storeDir)).uid, (await fs.stat(storeDir)).gid)
    const nodeCommand = `${process.execPath} ${DBB} wal fetch --storage local --local-dir ${storeDir} %f %p`
    const viaNode = await replay('fetch-node', ['--restore-command', nodeCommand], async () => {}, {WAL_SPOOL_DIR: fetchSpool})
    const ratio = (seconds: number) => `**${(seconds / inPgWal.seconds).toFixed(2)}×**`
    const generated = [
      `Measured ${new Date().toISOString()}${note ? ` (${note})` : ''}: replay of ${segments.length} segments (${(segments.length * 16).toLocaleString('en')} MiB of WAL), load at start ${loadAtStart}, at the end ${await loadAverage()}:`,
      '',
      '| replay | wall (start → end of recovery) | ratio to pg_wal (target ≤ 1.3×) | segments from the prefetch queue | load before it |',
      '| --- | --- | --- | --- | --- |',
      `| WAL already in pg_wal (restore_command = false) | ${inPgWal.seconds.toFixed(1)} s | 1× | — | ${loadAtStart} |`,
      `| \`dbb-wal fetch\` (sh foreground: dbb restore's restore_command, WAL_PREFETCH=8) | ${fetched.seconds.toFixed(1)} s | ${ratio(fetched.seconds)} | ${fetched.fromQueue} | ${loadBefore[0]} |`,
      `| \`node bin/run.js wal fetch\` (Node foreground, WAL_PREFETCH=8) | ${viaNode.seconds.toFixed(1)} s | ${ratio(viaNode.seconds)} | ${viaNode.fromQueue} | ${loadBefore[1]} |`,
      '',
    ].join('\n')
    process.stdout.write(`\n${generated}`)
    const report = path.join(ROOT, 'BENCHMARKS.md')
    const existing = await fs.readFile(report, 'utf8')
    const [start, end] = ['<!-- bench-wal-replay:start (generated by npm run bench:wal-replay) -->', '<!-- bench-wal-replay:end -->']
    const from = existing.indexOf(start)
    const to = existing.indexOf(end)
    if (from !== -1 && to > from) await fs.writeFile(report, `${existing.slice(0, from + start.length)}\n${generated}${existing.slice(to)}`)
  } finally {
    await cluster.destroy()
    for (const dir of [...dirs, ...dirs.map((dir) => `${dir}.log`), storeDir, spoolDir, fetchSpool]) await fs.rm(dir, {recursive: true, force: true})
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`)
  process.exitCode = 1
})
