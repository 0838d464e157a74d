/**
 * `npm run bench:wal-listing`: issue 13 item 6 — `dbb check` and `dbb prune` on an archive of
 * 100,000 WAL segments on a real s3rver (objects planted straight into its directory: tiny bodies
 * under the real key names), every request counted by the test suite's recording proxy. Also times
 * one full listing of `wal/` (what both commands did before) for comparison. Prints a Markdown table.
 *
 * Flags: --segments N (default 100000).
 */
import {ListObjectsV2Command, S3Client} from '@aws-sdk/client-s3'
import {createHash} from 'node:crypto'
import {execFile} from 'node:child_process'
import {promisify} from 'node:util'

import {sidecarKey} from '../src/backup/naming'
import {segmentName} from '../src/wal/chain'
import {startRecordingProxy} from '../test/helpers/recording-proxy'
import {plantS3rverObjects} from '../test/helpers/s3rver-plant'
import {startS3Server} from '../test/helpers/s3-server'
import {DBB} from './measure'

const run = promisify(execFile)
const SEGMENT_BYTES = 16 * 1024 * 1024
const PREFIX = 'scale'

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const index = argv.indexOf('--segments')
  const segments = index === -1 ? 100_000 : Number(argv[index + 1])
  const name = (n: number) => segmentName(1, BigInt(n), SEGMENT_BYTES)
  const s3 = await startS3Server()
  const proxy = await startRecordingProxy(() => s3.port)
  try {
    const planting = Date.now()
    const objects: {key: string; body: Buffer}[] = []
    for (let n = 1; n <= segments; n++) objects.push({key: `${PREFIX}/wal/${name(n)}.gz`, body: Buffer.from(`segment ${n}`)})
    const now = Date.now()
    // Two base backups: the oldest (prune's floor) 100 segments in, the newest 10 segments before the end.
    for (const [position, first] of [100, segments - 10].entries()) {
      const createdAt = new Date(now - (2 - position) * 60_000)
      const id = `backup_${createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}.tar.gz`
      const data = Buffer.from(`base backup ${position}`)
      const metadata = {
        id, type: 'base', createdAt: createdAt.toISOString(), sizeBytes: data.length, sha256: createHash('sha256').update(data).digest('hex'),
        durationMs: 1000, triggeredBy: 'cli', database: 'cluster', pgVersion: '15', format: 'tar', compression: 'gzip',
        timeline: 1, firstWalSegment: name(first), walSegmentSize: SEGMENT_BYTES,
      }
      objects.push({key: `${PREFIX}/${id}`, body: data}, {key: `${PREFIX}/${sidecarKey(id)}`, body: Buffer.from(JSON.stringify(metadata))})
    }

    await plantS3rverObjects(s3.directory, s3.bucket, objects)
    process.stderr.write(`planted ${objects.length} objects in ${((Date.now() - planting) / 1000).toFixed(1)} s\n`)
    const env = {...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...s3.dbbEnv({S3_PREFIX: PREFIX, CHECK_LOGICAL_BACKUP: 'false', BACKUPS_TO_RETAIN: '10'}, proxy.endpoint)}
    const rows: string[] = []
    const measure = async (label: string, args: string[]) => {
      const from = proxy.requests.length
      const started = process.hrtime.bigint()
      const result = await run(process.execPath, [DBB, ...args], {env, maxBuffer: 64 * 1024 * 1024}).catch((error: {stdout: string; code: number}) => error)
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      const requests = proxy.requests.slice(from)
      const lists = requests.filter((request) => /[?&]list-type=2/.test(request.url)).length
      const others = requests.length - lists
      rows.push(`| ${label} | ${lists} | ${others} | ${seconds.toFixed(1)} s |`)
      process.stderr.write(`${rows.at(-1)}\n${'code' in result && result.code ? `exit ${result.code}: ${result.stdout}\n` : ''}`)
    }

    await measure(`\`dbb check\` (chain from segment ${segments - 10})`, ['check', '--json'])
    await measure('`dbb prune` (floor at segment 100: deletes 99)', ['prune', '--json'])
    // What both listed before: the whole prefix, page by page.
    // What both listed before: the whole prefix, page by page (here through the SDK, no dbb start).
    // s3rver walks its whole directory for every page, so only the first pages are timed.
    const client = new S3Client({region: 'us-east-1', endpoint: proxy.endpoint, forcePathStyle: true, credentials: {accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey}})
    const sampled = 3
    const started = process.hrtime.bigint()
    let token: string | undefined
    for (let page = 0; page < sampled; page++) {
      const listed = await client.send(new ListObjectsV2Command({Bucket: s3.bucket, Prefix: `${PREFIX}/wal/`, ContinuationToken: token}))
      token = listed.NextContinuationToken
    }

    client.destroy()
    const perPage = Number(process.hrtime.bigint() - started) / 1e9 / sampled
    rows.push(`| full listing of \`wal/\` (what check and prune each did before) | ${Math.ceil(segments / 1000)} (1,000 keys a page) | 0 | ≈ ${(perPage * Math.ceil(segments / 1000)).toFixed(0)} s (${perPage.toFixed(1)} s a page, ${sampled} pages timed) |`)
    process.stderr.write(`${rows.at(-1)}\n`)
    process.stdout.write(['', `${segments.toLocaleString('en')} archived segments on s3rver (load ${(await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ')}):`, '', '| command | ListObjectsV2 requests | other requests | wall |', '| --- | --- | --- | --- |', ...rows, ''].join('\n'))
  } finally {
    await proxy.close()
    await s3.destroy()
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`)
  process.exitCode = 1
})
