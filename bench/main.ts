/**
 * `npm run bench`: the performance benchmark of issue 7. Creates a throwaway PostgreSQL cluster and
 * the benchmark database, then runs the pipelines side by side, interleaved, several times each,
 * and writes the medians to BENCHMARKS.md. Flags (all optional):
 *
 *   --scale N        pgbench scale of the main database (default 5)
 *   --wide-mb N      MB of SQL of wide text/jsonb rows added to it (default 60: the wide part is over half the dump)
 *   --wide-kind K    what the wide rows are: realistic (default: text and JSON documents, bench/database.ts) or random (hex digests: the old worst case)
 *   --runs N         rounds of the interleaved pipelines (default 3)
 *   --large-factor N the memory-flatness database is N times larger (default 4; 0 skips it; `--only flatness --large-factor 10` is issue 15's 10× run)
 *   --levels L,L     extra COMPRESSION_LEVELs measured for the size/speed trade-off (default 3,6)
 *   --output FILE    report file (default BENCHMARKS.md in the repository)
 *   --note TEXT      a line printed under the title, e.g. "machine shared with other jobs"
 *   --only restore   measure only the restore rows (dbb restore beside gunzip | psql), skipping the rest
 *   --only flatness  measure only memory flatness: dbb backup run → local (with defaults and without igzip or pigz on PATH) and → S3, on the default and the --large-factor database
 *   --list-backups N backups planted on s3rver for the `dbb backup list` row (default 1000; 0 skips it)
 */
import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {onPath} from '../src/compress/program-compressor'
import {pathWithout} from '../test/helpers/cli'
import {PgCluster, startPostgres} from '../test/helpers/postgres'
import type {S3Server} from '../test/helpers/s3-server'
import {plantS3rverObjects} from '../test/helpers/s3rver-plant'
import {BenchDatabase, WIDE_KINDS, WideKind, createBenchDatabase, libpqEnv} from './database'
import {ROOT, Timed, median, timeDbb, timeShell} from './measure'
import {CHART_FILE, Report, Row, renderChart, renderFlatnessReport, renderReport, spliceSection} from './report'

interface Options {
  scale: number
  wideMb: number
  runs: number
  largeFactor: number
  levels: number[]
  output: string
  note?: string
  only?: 'restore' | 'flatness'
  wideKind: WideKind
  listBackups: number
}

function parseOptions(argv: string[]): Options {
  const options: Options = {scale: 5, wideMb: 60, runs: 3, largeFactor: 4, levels: [3, 6], output: path.join(ROOT, 'BENCHMARKS.md'), wideKind: 'realistic', listBackups: 1000}
  for (let index = 0; index < argv.length; index += 2) {
    const [name, value] = [argv[index], argv[index + 1]]
    const number = Number(value)
    const needNumber = (min: number) => {
      if (!Number.isFinite(number) || number < min) throw new Error(`${name} needs a number ≥ ${min} (e.g. ${name} 10), got "${value}"`)
      return number
    }

    if (name === '--scale') options.scale = needNumber(1)
    else if (name === '--wide-mb') options.wideMb = needNumber(0)
    else if (name === '--runs') options.runs = needNumber(1)
    else if (name === '--large-factor') options.largeFactor = needNumber(0)
    else if (name === '--levels') options.levels = value ? value.split(',').map(Number) : []
    else if (name === '--output') options.output = path.resolve(value)
    else if (name === '--note') options.note = value
    else if (name === '--only' && (value === 'restore' || value === 'flatness')) options.only = value
    else if (name === '--wide-kind' && (WIDE_KINDS as readonly string[]).includes(value)) options.wideKind = value as WideKind
    else if (name === '--list-backups') options.listBackups = needNumber(0)
    else throw new Error(`unknown option ${name} (see the comment at the top of bench/main.ts)`)
  }

  return options
}

const seconds = (ms: number) => (ms / 1000).toFixed(2)

const SMALL_YOUNG_GENERATION = '--max-semi-space-size=1'
/** The databases the restore rows restore into. */
const RESTORE_TARGETS = {shell: 'restore_shell', dbb: 'restore_dbb'}
const WITHOUT_PIGZ = "dbb backup run → local, without igzip or pigz on PATH (dbb's own gzip)"
/** gzip through pigz, as where igzip is not installed (the defaults' row uses igzip where it is). */
const PIGZ_ONLY = 'dbb backup run → local, gzip by pigz (igzip not on PATH)'
const TO_S3 = 'dbb backup run → S3 (s3rver, loopback)'

/** A named pipeline: run once per round, its samples collected. */
interface Pipeline {
  name: string
  run: () => Promise<Timed & {outputBytes?: number}>
  samples: (Timed & {outputBytes?: number})[]
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-bench-'))
  const log = (text: string) => process.stderr.write(`[bench] ${text}\n`)
  let cluster: PgCluster | undefined
  let s3: S3Server | undefined
  try {
    log(`starting PostgreSQL; creating the database (pgbench scale ${options.scale} + ${options.wideMb} MB of ${options.wideKind} wide rows)`)
    cluster = await startPostgres({settings: {shared_buffers: "'256MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'"}})
    const database = await createBenchDatabase(cluster, 'bench', options.scale, options.wideMb, options.wideKind)
    log(`database ${(database.sizeBytes / 1e6).toFixed(0)} MB, plain dump ${(database.dumpBytes / 1e6).toFixed(0)} MB`)

    const skipped: string[] = []
    try {
      const {startS3Server} = await import('../test/helpers/s3-server')
      s3 = await startS3Server({bucket: 'dbb-bench'})
    } catch (error) {
      skipped.push(`dbb backup run to S3: the S3 test server did not start (${(error as Error).message})`)
    }

    const restoreAvailable = await fs
      .access(path.join(ROOT, 'dist', 'commands', 'restore.js'))
      .then(() => true)
      .catch(() => false)
    if (!restoreAvailable) skipped.push('restore rows: `dbb restore` is not built (dist/commands/restore.js missing)')

    const localDir = path.join(work, 'local')
    await fs.mkdir(localDir)
    const dbbEnv = (db: BenchDatabase, extra: Record<string, string> = {}) => ({
      ...libpqEnv(cluster!, db.name),
      ...cluster!.dbbEnv(db.name),
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'warn',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...extra,
    })
    const dbbBackup = async (db: BenchDatabase, extra: Record<string, string>) => {
      const timed = await timeDbb(['backup', 'run', '--json', '--no-prune'], dbbEnv(db, extra))
      const outcome = JSON.parse(timed.stdout) as {metadata: {id: string; sizeBytes: number}}
      return {...timed, outputBytes: outcome.metadata.sizeBytes, id: outcome.metadata.id}
    }

    /** A PATH without igzip and pigz (dbb then gzips in-process), made once for every row that needs it. */
    let pathWithoutPigz: Promise<string> | undefined
    const noPigzPath = () => (pathWithoutPigz ??= pathWithout(['igzip', 'pigz'], path.join(work, 'path-without-gzip-programs')))

    /** The flatness table's row for dbb's own gzip (no pigz on PATH), `runs` backups of `db`. */
    const backupWithoutPigz = async (db: BenchDatabase, runs: number) => {
      const samples = []
      for (let attempt = 0; attempt < runs; attempt++) {
        const result = await dbbBackup(db, {BACKUP_LOCAL_DIR: localDir, PATH: await noPigzPath()})
        await removeBackup(localDir, result.id)
        samples.push(result)
      }

      return sampledRow(WITHOUT_PIGZ, samples)
    }

    /**
     * The flatness table's S3 row, `runs` backups of `db`: S3 uploads hold parts in memory
     * ((S3_UPLOAD_CONCURRENCY + 1) × S3_PART_SIZE), so only a dump of several parts shows the peak.
     */
    const backupToS3 = async (db: BenchDatabase, runs: number) => {
      const samples = []
      for (let attempt = 0; attempt < runs; attempt++) samples.push(await dbbBackup(db, s3!.dbbEnv({S3_PREFIX: `flatness-${db.name}`})))
      return sampledRow(TO_S3, samples)
    }

    let lastLocalBackup: string | undefined
    const shellFile = path.join(work, 'shell.sql.gz')
    const pipelines: Pipeline[] = [
      {name: 'floor: pg_dump > /dev/null', run: () => timeShell('pg_dump --no-owner --no-privileges > /dev/null', libpqEnv(cluster!, 'bench')), samples: []},
      {
        name: 'pg_dump | gzip -6 > file',
        run: async () => ({
          ...(await timeShell(`pg_dump --no-owner --no-privileges | gzip -6 > ${shellFile}`, libpqEnv(cluster!, 'bench'))),
          outputBytes: (await fs.stat(shellFile)).size,
        }),
        samples: [],
      },
      {
        name: 'dbb backup run → local (defaults)',
        run: async () => {
          if (lastLocalBackup) await removeBackup(localDir, lastLocalBackup)
          const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: localDir})
          lastLocalBackup = result.id
          return result
        },
        samples: [],
      },
    ]
    // Where igzip is installed the defaults' gzip goes through it (src/compress/program-compressor.ts):
    // pigz's row beside it is what a machine without igzip gets.
    if (onPath('igzip')) {
      const pigzDir = path.join(work, 'pigz-only')
      await fs.mkdir(pigzDir)
      const pigzPath = pathWithout('igzip', path.join(work, 'path-without-igzip'))
      pipelines.push({
        name: PIGZ_ONLY,
        run: async () => {
          const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: pigzDir, PATH: await pigzPath})
          await removeBackup(pigzDir, result.id)
          return result
        },
        samples: [],
      })
    }

    // The Docker image runs dbb with a 1 MB young generation (docker/Dockerfile): measured beside the default.
    const semiSpaceDir = path.join(work, 'semi-space')
    await fs.mkdir(semiSpaceDir)
    pipelines.push({
      name: `dbb backup run → local, NODE_OPTIONS=${SMALL_YOUNG_GENERATION} (Docker image)`,
      run: async () => {
        const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: semiSpaceDir, NODE_OPTIONS: SMALL_YOUNG_GENERATION})
        await removeBackup(semiSpaceDir, result.id)
        return result
      },
      samples: [],
    })
    // What users would pick instead of dbb (issue 15), and dbb with COMPRESSION=zstd.
    const cores = os.availableParallelism()
    const alternatives: [string, string, string][] = [
      [`pg_dump | pigz -1 -p${cores} > file`, `pg_dump --no-owner --no-privileges | pigz -1 -p${cores} > ${shellFile}.pigz`, `${shellFile}.pigz`],
      ['pg_dump | zstd -1 -T0 > file', `pg_dump --no-owner --no-privileges | zstd -q -1 -T0 > ${shellFile}.zst`, `${shellFile}.zst`],
      ['pg_dump -Fc > file', `pg_dump --no-owner --no-privileges -Fc -f ${shellFile}.custom`, `${shellFile}.custom`],
    ]
    for (const [name, command, output] of alternatives) {
      pipelines.push({
        name,
        run: async () => ({...(await timeShell(command, libpqEnv(cluster!, 'bench'))), outputBytes: (await fs.stat(output)).size}),
        samples: [],
      })
    }

    const zstdDir = path.join(work, 'zstd')
    await fs.mkdir(zstdDir)
    pipelines.push({
      name: 'dbb backup run → local, COMPRESSION=zstd',
      run: async () => {
        const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: zstdDir, COMPRESSION: 'zstd'})
        await removeBackup(zstdDir, result.id)
        return result
      },
      samples: [],
    })
    // Base backups (issue 15 item 4): the whole cluster as pg_basebackup's tar stream, beside
    // pg_basebackup alone with the same WAL method and checkpoint as dbb's defaults.
    const baseDir = path.join(work, 'base')
    await fs.mkdir(baseDir)
    pipelines.push({
      name: 'base floor: pg_basebackup -Ft -D - > /dev/null',
      run: () => timeShell('pg_basebackup -D - --format=tar --wal-method=fetch --checkpoint=fast --no-password > /dev/null 2>&1', libpqEnv(cluster!, 'postgres')),
      samples: [],
    })
    for (const codec of ['gzip', 'zstd']) {
      pipelines.push({
        name: `dbb backup run --type base → local, COMPRESSION=${codec}`,
        run: async () => {
          const timed = await timeDbb(['backup', 'run', '--type', 'base', '--json', '--no-prune'], dbbEnv(database, {BACKUP_LOCAL_DIR: baseDir, COMPRESSION: codec}))
          const outcome = JSON.parse(timed.stdout) as {metadata: {id: string; sizeBytes: number}}
          await removeBackup(baseDir, outcome.metadata.id)
          return {...timed, outputBytes: outcome.metadata.sizeBytes}
        },
        samples: [],
      })
    }

    // Encryption's cost on top of compression (issue 20 item 4, target ≤ 10 %): the same run with one age recipient.
    const ageDir = path.join(work, 'age')
    await fs.mkdir(ageDir)
    execFileSync('age-keygen', ['-o', path.join(work, 'age-key.txt')], {stdio: 'ignore'})
    const recipient = execFileSync('age-keygen', ['-y', path.join(work, 'age-key.txt')], {encoding: 'utf8'}).trim()
    pipelines.push({
      name: 'dbb backup run → local, ENCRYPTION_RECIPIENTS (age)',
      run: async () => {
        const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: ageDir, ENCRYPTION_RECIPIENTS: recipient})
        await removeBackup(ageDir, result.id)
        return result
      },
      samples: [],
    })
    // Without pigz on PATH dbb compresses in-process, and the whole dump passes through its heap
    // (issue 15's memory target holds for that too: src/dead-buffers.ts).
    const noPigzDir = path.join(work, 'no-pigz')
    await fs.mkdir(noPigzDir)
    pipelines.push({
      name: WITHOUT_PIGZ,
      run: async () => {
        const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: noPigzDir, PATH: await noPigzPath()})
        await removeBackup(noPigzDir, result.id)
        return result
      },
      samples: [],
    })
    if (s3) {
      pipelines.push({
        name: TO_S3,
        run: () => dbbBackup(database, s3!.dbbEnv({S3_PREFIX: 'bench'})),
        samples: [],
      })
    }

    for (const level of options.levels) {
      const levelDir = path.join(work, `level-${level}`)
      await fs.mkdir(levelDir)
      pipelines.push({
        name: `dbb backup run → local, COMPRESSION_LEVEL=${level}`,
        run: async () => {
          const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: levelDir, COMPRESSION_LEVEL: String(level)})
          await removeBackup(levelDir, result.id)
          return result
        },
        samples: [],
      })
    }

    if (options.only === 'flatness') pipelines.splice(0, pipelines.length)
    if (options.only === 'restore') {
      // The restore rows need a stored dump: one backup, then only the two restores are measured.
      lastLocalBackup = (await dbbBackup(database, {BACKUP_LOCAL_DIR: localDir})).id
      await timeShell(`pg_dump --no-owner --no-privileges | gzip -6 > ${shellFile}`, libpqEnv(cluster!, 'bench'))
      pipelines.splice(0, pipelines.length)
    }

    if (restoreAvailable && options.only !== 'flatness') {
      pipelines.push(
        {
          name: 'restore: dropdb; createdb (empty); gunzip -c | psql --single-transaction',
          run: () =>
            timeShell(
              `dropdb --if-exists ${RESTORE_TARGETS.shell} && createdb ${RESTORE_TARGETS.shell} && gunzip -c ${shellFile} | psql -X -q -o /dev/null -v ON_ERROR_STOP=1 --single-transaction -d ${RESTORE_TARGETS.shell}`,
              libpqEnv(cluster!, 'postgres'),
            ),
          samples: [],
        },
        {
          name: 'restore: dbb restore (local; staging, one pass, swap, drop replaced)',
          run: () => timeDbb(['restore', lastLocalBackup!, '--target-db', RESTORE_TARGETS.dbb, '--force', '--json'], dbbEnv(database, {BACKUP_LOCAL_DIR: localDir})),
          samples: [],
        },
      )
    }

    for (let round = 1; round <= options.runs; round++) {
      for (const pipeline of pipelines) {
        log(`round ${round}/${options.runs}: ${pipeline.name}`)
        pipeline.samples.push(await pipeline.run())
      }

      // The restore rows come last in a round and leave their databases behind: dropped (untimed)
      // so that every round's base-backup rows copy the same cluster, the benchmark database alone
      // (before, rounds 2 and 3 also copied two restored copies of it: 313 MB stored against 106 MB).
      for (const target of Object.values(RESTORE_TARGETS)) await cluster!.psql(`DROP DATABASE IF EXISTS ${target}`)
    }

    const rows: Row[] = pipelines.map((pipeline) => ({
      name: pipeline.name,
      wallMs: median(pipeline.samples.map((sample) => sample.wallMs)),
      outputBytes: pipeline.samples.at(-1)?.outputBytes,
      maxRssBytes: pipeline.samples[0].maxRssBytes === undefined ? undefined : Math.max(...pipeline.samples.map((sample) => sample.maxRssBytes ?? 0)),
      runs: pipeline.samples.length,
    }))

    if (options.only === 'restore') {
      const [shell, dbb] = rows
      const line = `dbb restore ${seconds(dbb.wallMs)} s, gunzip | psql --single-transaction ${seconds(shell.wallMs)} s: ${(dbb.wallMs / shell.wallMs).toFixed(2)}× (target ≤ 1.05×)`
      process.stdout.write(`${line}\n`)
      await fs.writeFile(options.output, `${JSON.stringify({date: new Date(), database, rows, line}, null, 2)}\n`)
      return
    }

    const coldStart: Row[] = []
    const flatness: {database: BenchDatabase; row: Row; floorMs: number}[] = []
    if (options.only === 'flatness') {
      const samples = []
      const floors: number[] = []
      for (let attempt = 0; attempt < options.runs; attempt++) {
        floors.push((await timeShell('pg_dump --no-owner --no-privileges > /dev/null', libpqEnv(cluster, database.name))).wallMs)
        const result = await dbbBackup(database, {BACKUP_LOCAL_DIR: localDir})
        await removeBackup(localDir, result.id)
        samples.push(result)
      }

      flatness.push({database, floorMs: median(floors), row: sampledRow('dbb backup run → local (defaults)', samples)})
      flatness.push({database, floorMs: median(floors), row: await backupWithoutPigz(database, options.runs)})
      if (s3) flatness.push({database, floorMs: median(floors), row: await backupToS3(database, options.runs)})
    } else {
      flatness.push({database, row: rows[2], floorMs: rows[0].wallMs})
      for (const name of [WITHOUT_PIGZ, TO_S3]) {
        const row = rows.find((candidate) => candidate.name === name)
        if (row) flatness.push({database, row, floorMs: rows[0].wallMs})
      }

      log('cold start')
      const emptyDir = path.join(work, 'empty')
      await fs.mkdir(emptyDir)
      for (const [name, args] of [
        ['dbb --version', ['--version']],
        ['dbb backup list (empty local dir)', ['backup', 'list']],
      ] as const) {
        const samples: Timed[] = []
        for (let attempt = 0; attempt < 7; attempt++) samples.push(await timeDbb([...args], dbbEnv(database, {BACKUP_LOCAL_DIR: emptyDir})))
        coldStart.push({name, wallMs: median(samples.map((sample) => sample.wallMs)), maxRssBytes: Math.max(...samples.map((s) => s.maxRssBytes ?? 0)), runs: samples.length})
      }
      if (s3 && options.listBackups > 0) {
        log(`dbb backup list --json over ${options.listBackups} backups planted on s3rver`)
        coldStart.push(await timeBackupList(s3, options.listBackups, cluster, work, dbbEnv))
      }
    }

    if (options.largeFactor > 0) {
      log(`memory flatness: a ${options.largeFactor}× larger database`)
      const large = await createBenchDatabase(cluster, 'bench_large', options.scale * options.largeFactor, options.wideMb * options.largeFactor, options.wideKind)
      const samples = []
      const floors: number[] = []
      for (let attempt = 0; attempt < (options.only === 'flatness' ? options.runs : 2); attempt++) {
        floors.push((await timeShell('pg_dump --no-owner --no-privileges > /dev/null', libpqEnv(cluster, large.name))).wallMs)
        const result = await dbbBackup(large, {BACKUP_LOCAL_DIR: localDir})
        await removeBackup(localDir, result.id)
        samples.push(result)
      }

      flatness.push({database: large, floorMs: median(floors), row: sampledRow('dbb backup run → local (defaults)', samples)})
      flatness.push({database: large, floorMs: median(floors), row: await backupWithoutPigz(large, options.only === 'flatness' ? options.runs : 2)})
      if (s3) flatness.push({database: large, floorMs: median(floors), row: await backupToS3(large, options.only === 'flatness' ? options.runs : 2)})
    }

    const report: Report = {
      date: new Date(),
      cores: os.availableParallelism(),
      cpu: os.cpus()[0]?.model ?? 'unknown',
      node: process.version,
      postgres: await cluster.psql('SHOW server_version'),
      options,
      database,
      rows,
      coldStart,
      flatness,
      skipped,
    }
    // The flatness run has its own generated section, so it never replaces the main table.
    const markdown = options.only === 'flatness' ? renderFlatnessReport(report) : renderReport(report)
    if (options.only !== 'flatness') await fs.writeFile(path.join(path.dirname(options.output), CHART_FILE), renderChart(report))
    await fs.writeFile(options.output, await spliceGenerated(options.output, markdown, options.only === 'flatness' ? 'bench-flatness' : 'bench'))
    await fs.mkdir(path.join(ROOT, 'bench-results'), {recursive: true})
    await fs.writeFile(path.join(ROOT, 'bench-results', `bench-${report.date.toISOString().replaceAll(':', '')}.json`), JSON.stringify(report, null, 2))
    process.stdout.write(markdown)
    log(`wrote ${options.output}`)
  } finally {
    await s3?.destroy().catch(() => {})
    await cluster?.destroy().catch(() => {})
    await fs.rm(work, {recursive: true, force: true})
  }
}

/** Replaces only the generated part of an existing report (between its markers), keeping the prose around it. */
async function spliceGenerated(file: string, generated: string, section: 'bench' | 'bench-flatness'): Promise<string> {
  const existing = await fs.readFile(file, 'utf8').catch(() => '')
  return spliceSection(existing, generated, section)
}

function sampledRow(name: string, samples: (Timed & {outputBytes?: number})[]): Row {
  return {
    name,
    wallMs: median(samples.map((sample) => sample.wallMs)),
    outputBytes: samples[0]?.outputBytes,
    maxRssBytes: Math.max(...samples.map((sample) => sample.maxRssBytes ?? 0)),
    runs: samples.length,
  }
}

/**
 * `dbb backup list --json` over `count` backups on s3rver: one real backup of a small database is
 * taken, then its dump and sidecar are planted under `count` ids (one a minute apart) straight in
 * s3rver's directory, so listing reads `count` real sidecars and sizes through the S3 protocol.
 */
async function timeBackupList(
  s3: S3Server,
  count: number,
  cluster: PgCluster,
  work: string,
  dbbEnv: (db: BenchDatabase, extra?: Record<string, string>) => NodeJS.ProcessEnv,
): Promise<Row> {
  await cluster.psql('DROP DATABASE IF EXISTS list_source')
  await cluster.psql('CREATE DATABASE list_source')
  await cluster.psql('CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'list_source')
  const source: BenchDatabase = {name: 'list_source', sizeBytes: 0, dumpBytes: 0}
  const sourceDir = path.join(work, 'list-source')
  await fs.mkdir(sourceDir)
  const taken = await timeDbb(['backup', 'run', '--json', '--no-prune'], dbbEnv(source, {BACKUP_LOCAL_DIR: sourceDir}))
  const {id} = (JSON.parse(taken.stdout) as {metadata: {id: string}}).metadata
  const dump = await fs.readFile(path.join(sourceDir, id))
  const sidecar = JSON.parse(await fs.readFile(path.join(sourceDir, `${id}.meta.json`), 'utf8')) as Record<string, unknown>
  const prefix = 'list'
  const objects = Array.from({length: count}, (_, index) => {
    const createdAt = new Date(Date.UTC(2026, 0, 1) + index * 60_000)
    const stamp = createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')
    const plantedId = id.replace(/\d{8}T\d{6}Z/, stamp)
    const metadata = Buffer.from(JSON.stringify({...sidecar, id: plantedId, createdAt: createdAt.toISOString()}, null, 2))
    return [
      {key: `${prefix}/${plantedId}`, body: dump},
      {key: `${prefix}/${plantedId}.meta.json`, body: metadata},
    ]
  }).flat()
  await plantS3rverObjects(s3.directory, s3.bucket, objects)
  const samples: Timed[] = []
  for (let attempt = 0; attempt < 5; attempt++) {
    const timed = await timeDbb(['backup', 'list', '--json'], dbbEnv(source, s3.dbbEnv({S3_PREFIX: prefix})))
    const listed = JSON.parse(timed.stdout) as unknown[]
    if (listed.length !== count) throw new Error(`dbb backup list listed ${listed.length} backups, ${count} were planted`)
    samples.push(timed)
  }

  return sampledRow(`dbb backup list --json (${count} backups on s3rver)`, samples)
}

async function removeBackup(dir: string, id: string): Promise<void> {
  await fs.rm(path.join(dir, id), {force: true})
  await fs.rm(path.join(dir, `${id}.meta.json`), {force: true})
}

main().catch((error: unknown) => {
  process.stderr.write(`[bench] failed: ${(error as Error).message}\n`)
  process.exitCode = 1
})
