/**
 * `npm run bench:proofs`: what each of dbb's proofs costs when stock tools do it, with no Node at
 * all, beside dbb itself, in interleaved rounds on the benchmark database. It answers one question
 * about issue 15's time targets: is a miss dbb's own overhead, or the price of what a backup proves?
 *
 * Each rung is a shell pipeline that adds one proof dbb makes to the one before:
 *   stock        pg_dump | <compressor> > file (what the targets compare against)
 *   + check      the compressed stream decoded as it is written (dbb's in-stream check:
 *                `zstd -t`, `igzip -d | wc -c`, src/compress/gzip-check.ts)
 *   + sha256     the digest of the stored bytes, recorded in the sidecar
 *   + read-back  the file fsynced, then read again and hashed (src/backup/verify.ts)
 *   + counts     every table counted beside the dump (the contents record, logical backups only;
 *                dbb counts in pg_dump's snapshot, this in its own: the same work)
 * then `dbb backup run` with the same codec, to local storage. The report is printed (markdown),
 * not written into BENCHMARKS.md: it is an analysis run, quoted by hand with its date.
 *
 *   --kinds K,K           logical (pg_dump) and/or base (pg_basebackup) ladders (default logical,base)
 *   --codecs C,C          zstd and/or gzip, through the program dbb would pick (igzip, else pigz, for gzip) (default zstd,gzip)
 *   --scale N, --wide-mb N, --wide-kind K   the database, as for `npm run bench` (default 5, 60, realistic)
 *   --runs N              interleaved rounds (default 5)
 */
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {CHECK_PROGRAMS} from '../src/compress/gzip-check'
import {onPath, programFor} from '../src/compress/program-compressor'
import {PgCluster, startPostgres} from '../test/helpers/postgres'
import {WIDE_KINDS, WideKind, createBenchDatabase, libpqEnv} from './database'
import {median, timeDbb, timeShell} from './measure'

type Kind = 'logical' | 'base'
type Codec = 'zstd' | 'gzip'

interface Options {
  kinds: Kind[]
  codecs: Codec[]
  scale: number
  wideMb: number
  wideKind: WideKind
  runs: number
}

function parseOptions(argv: string[]): Options {
  const options: Options = {kinds: ['logical', 'base'], codecs: ['zstd', 'gzip'], scale: 5, wideMb: 60, wideKind: 'realistic', runs: 5}
  for (let index = 0; index < argv.length; index += 2) {
    const [name, value] = [argv[index], argv[index + 1]]
    const number = Number(value)
    const list = (value ?? '').split(',')
    if (name === '--kinds' && list.every((kind) => kind === 'logical' || kind === 'base')) options.kinds = list as Kind[]
    else if (name === '--codecs' && list.every((codec) => codec === 'zstd' || codec === 'gzip')) options.codecs = list as Codec[]
    else if (name === '--wide-kind' && (WIDE_KINDS as readonly string[]).includes(value)) options.wideKind = value as WideKind
    else if (['--scale', '--wide-mb', '--runs'].includes(name) && Number.isInteger(number) && number >= (name === '--wide-mb' ? 0 : 1)) {
      if (name === '--scale') options.scale = number
      else if (name === '--wide-mb') options.wideMb = number
      else options.runs = number
    } else throw new Error(`unknown option or value: ${name} ${value ?? ''} (see the comment at the top of bench/proofs.ts)`)
  }

  return options
}

/**
 * The programs dbb itself runs for the codec at its default level, with their arguments, read from
 * where dbb declares them: the compressor (src/compress/program-compressor.ts: igzip where it
 * passes its probe, else pigz) and its in-stream check (src/compress/gzip-check.ts).
 */
function codecPrograms(codec: Codec): {compress: string; check: string} {
  const spec = programFor(codec, 1)
  if (!spec) throw new Error(`the ${codec} rungs need its program on PATH (zstd; igzip or pigz)`)
  const check = CHECK_PROGRAMS[spec.program]
  const decode = [spec.program, ...(check.reportsSize ? check.args : check.decodeArgs)].join(' ')
  return {
    compress: [spec.program, ...spec.args(1, os.availableParallelism())].join(' '),
    check: check.reportsSize ? decode : `${decode} | wc -c > /dev/null`,
  }
}

/** What gzip's target compares with: `pg_dump | pigz -1 -p<cores>` (bench/main.ts's reference row). */
const PIGZ_REFERENCE = `pigz -1 -p${os.availableParallelism()}`

/** Every user table counted, one statement each (what the contents record asks the server). */
const COUNT_EVERY_TABLE = String.raw`SELECT format('SELECT count(*) FROM %I.%I;', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \gexec`

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-bench-proofs-'))
  const log = (text: string) => process.stderr.write(`[bench:proofs] ${text}\n`)
  let cluster: PgCluster | undefined
  try {
    log(`starting PostgreSQL; creating the database (pgbench scale ${options.scale} + ${options.wideMb} MB of ${options.wideKind} wide rows)`)
    cluster = await startPostgres({settings: {shared_buffers: "'256MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'"}})
    const database = await createBenchDatabase(cluster, 'bench', options.scale, options.wideMb, options.wideKind)
    log(`plain dump ${(database.dumpBytes / 1e6).toFixed(0)} MB; ${options.runs} interleaved rounds per ladder`)

    /** One ladder: its rungs, Node's start and dbb, interleaved for options.runs rounds; a markdown table. */
    const ladder = async (kind: Kind, codec: Codec): Promise<string> => {
      const env = libpqEnv(cluster!, kind === 'base' ? 'postgres' : 'bench')
      const file = path.join(work, 'out')
      const {compress, check} = codecPrograms(codec)
      const source =
        kind === 'base' ? 'pg_basebackup -D - --format=tar --wal-method=fetch --checkpoint=fast --no-password' : 'pg_dump --no-owner --no-privileges'
      const floor = `${source} > /dev/null`
      // Every consumer of the stream is waited for: `wait` does not wait for bash's process
      // substitutions, so the sha256 and the check read named pipes and are waited for by pid.
      const [toHash, toCheck] = [path.join(work, 'to-hash'), path.join(work, 'to-check')]
      const stored = [
        `rm -f ${toHash} ${toCheck} && mkfifo ${toHash} ${toCheck}`,
        `sha256sum < ${toHash} > /dev/null & hashing=$!`,
        `(${check}) < ${toCheck} & checking=$!`,
        `${source} | ${compress} | tee ${toHash} ${toCheck} | dd of=${file} bs=1M conv=fsync status=none`,
        'wait $hashing && wait $checking',
      ].join('\n')
      const readBack = `sha256sum ${file} > /dev/null`
      const rungs: {name: string; script: string}[] = [
        {name: `floor: ${floor.replace(' --no-password', '')}`, script: floor},
        {name: `stock: | ${compress} > file`, script: `${source} | ${compress} > ${file}`},
        // gzip's target (issue 15) is a ratio to pigz at level 1 on every core: its row, beside the floor.
        ...(codec === 'gzip' && onPath('pigz') ? [{name: `reference: | ${PIGZ_REFERENCE} > file`, script: `${source} | ${PIGZ_REFERENCE} > ${file}`}] : []),
        {name: '+ in-stream check', script: `${source} | ${compress} | tee ${file} | (${check})`},
        {name: '+ sha256 of the stream, fsync', script: stored},
        {name: '+ read-back (sha256 of the stored file)', script: `${stored}\n${readBack}`},
      ]
      if (kind === 'logical') {
        const counting = `psql -qAt -v ON_ERROR_STOP=1 -f ${path.join(work, 'counts.sql')} > /dev/null & counting=$!`
        rungs.push({name: '+ every table counted beside the dump', script: `${counting}\n${stored}\nwait $counting\n${readBack}`})
      }

      const localDir = path.join(work, 'local')
      const dbbArgs = ['backup', 'run', ...(kind === 'base' ? ['--type', 'base'] : []), '--json', '--no-prune']
      const dbbEnv = {...env, ...cluster!.dbbEnv('bench'), BACKUP_LOCAL_DIR: localDir, COMPRESSION: codec, LOG_FORMAT: 'json', LOG_LEVEL: 'warn'}
      const rows = [
        // set -e: a rung whose pipeline, check or count failed stops the run instead of timing half of it.
        ...rungs.map((rung) => ({name: rung.name, run: async () => (await timeShell(`set -e\n${rung.script}`, env)).wallMs})),
        {name: "Node's own start: node -e 0", run: async () => (await timeShell('node -e 0', env)).wallMs},
        {
          name: `dbb backup run${kind === 'base' ? ' --type base' : ''}, COMPRESSION=${codec}`,
          run: async () => {
            await fs.rm(localDir, {recursive: true, force: true})
            await fs.mkdir(localDir)
            return (await timeDbb(dbbArgs, dbbEnv)).wallMs
          },
        },
      ].map((row) => ({...row, samples: [] as number[]}))

      for (let round = 1; round <= options.runs; round++) {
        for (const row of rows) row.samples.push(await row.run())
        log(`round ${round}/${options.runs} done`)
      }

      const floorMs = median(rows[0].samples)
      const lines = [
        `${kind} backup, ${codec}, plain dump ${(database.dumpBytes / 1e6).toFixed(0)} MB, ${options.runs} interleaved rounds, ${new Date().toISOString().slice(0, 16)} UTC, load ${os.loadavg()[0].toFixed(2)} at the end`,
        '',
        '| rung | median | × floor | rounds (s) |',
        '| --- | --- | --- | --- |',
        ...rows.map((row) => {
          const ms = median(row.samples)
          return `| ${row.name} | ${(ms / 1000).toFixed(2)} s | ${(ms / floorMs).toFixed(2)}× | ${row.samples.map((sample) => (sample / 1000).toFixed(2)).join(', ')} |`
        }),
      ]
      return lines.join('\n')
    }

    await fs.writeFile(path.join(work, 'counts.sql'), `${COUNT_EVERY_TABLE}\n`)
    for (const kind of options.kinds) {
      for (const codec of options.codecs) process.stdout.write(`${await ladder(kind, codec)}\n\n`)
    }
  } finally {
    await cluster?.stop()
    await fs.rm(work, {recursive: true, force: true})
  }
}

main().catch((error: Error) => {
  process.stderr.write(`bench:proofs failed: ${error.stack ?? error.message}\n`)
  process.exitCode = 1
})
