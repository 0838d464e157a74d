import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {sidecarKey} from '../../src/backup/naming'
import {segmentName} from '../../src/wal/chain'
import {runCli} from '../helpers/cli'
import {RecordingProxy, startRecordingProxy} from '../helpers/recording-proxy'
import {plantS3rverObjects} from '../helpers/s3rver-plant'
import {S3Server, startS3Server} from '../helpers/s3-server'

/**
 * Issue 13 item 6: `dbb check` and `dbb prune` on a long WAL archive list what they need, not the
 * whole `wal/` prefix. A real s3rver holds 5,000 archived segments (planted straight into its
 * directory) and two base backups, one at segment 10 (prune's floor) and one at segment 4,990 (the
 * chain check starts there); every request goes through the recording proxy. A full listing of
 * `wal/` would be 5 or more ListObjectsV2 pages; each command gets by with one page of WAL keys.
 */
describe('check and prune on a 5,000-segment S3 archive', () => {
  const SEGMENT_BYTES = 16 * 1024 * 1024
  const SEGMENTS = 5000
  const PREFIX = 'scale'
  let s3: S3Server
  let proxy: RecordingProxy
  const name = (n: number) => segmentName(1, BigInt(n), SEGMENT_BYTES)

  beforeAll(async () => {
    s3 = await startS3Server()
    proxy = await startRecordingProxy(() => s3.port)
    const objects: {key: string; body: Buffer}[] = []
    for (let n = 1; n <= SEGMENTS; n++) objects.push({key: `${PREFIX}/wal/${name(n)}.gz`, body: Buffer.from(`segment ${n}`)})
    const now = Date.now()
    for (const [index, first] of [10, SEGMENTS - 10].entries()) {
      const createdAt = new Date(now - (2 - index) * 60_000)
      const id = `backup_${createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}.tar.gz`
      const data = Buffer.from(`base backup ${index}`)
      const metadata = {
        id,
        type: 'base',
        createdAt: createdAt.toISOString(),
        sizeBytes: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        durationMs: 1000,
        triggeredBy: 'cli',
        database: 'cluster',
        pgVersion: '15',
        format: 'tar',
        compression: 'gzip',
        timeline: 1,
        firstWalSegment: name(first),
        walSegmentSize: SEGMENT_BYTES,
      }
      objects.push({key: `${PREFIX}/${id}`, body: data}, {key: `${PREFIX}/${sidecarKey(id)}`, body: Buffer.from(JSON.stringify(metadata))})
    }

    await plantS3rverObjects(s3.directory, s3.bucket, objects)
  }, 120_000)

  afterAll(async () => {
    await proxy?.close()
    await s3?.destroy()
  })

  const env = (extra: Record<string, string> = {}) => s3.dbbEnv({S3_PREFIX: PREFIX, CHECK_LOGICAL_BACKUP: 'false', ...extra}, proxy.endpoint)
  const listRequests = (from: number) =>
    proxy.requests.slice(from).filter((request) => request.method === 'GET' && /[?&]list-type=2/.test(request.url))
  const prefixOf = (url: string) => decodeURIComponent(new URL(url, 'http://x').searchParams.get('prefix') ?? '')

  it('check lists the WAL from the newest base backup on: one page, not the 5,000 keys', async () => {
    const from = proxy.requests.length
    const result = await runCli(['check', '--json'], env())
    expect(result.code).toBe(0)
    const wal = JSON.parse(result.stdout).checks.find((check: {name: string}) => check.name === 'wal')
    expect(wal.status).toBe('pass')
    expect(wal.message).toMatch(/WAL chain complete from .*, 11 segments, timeline 1/)
    const walLists = listRequests(from).filter((request) => prefixOf(request.url).startsWith(`${PREFIX}/wal`))
    expect(walLists).toHaveLength(1)
    expect(walLists.some((request) => /continuation-token/.test(request.url))).toBe(false)
    // Nor does the backup scan page through wal/.
    expect(listRequests(from).length).toBeLessThanOrEqual(3)
  }, 120_000)

  it('prune deletes the 9 segments before the oldest base backup and lists one timeline range, not the archive', async () => {
    const from = proxy.requests.length
    const result = await runCli(['prune', '--json'], env({BACKUPS_TO_RETAIN: '10'}))
    expect(result.code).toBe(0)
    const deleted = JSON.parse(result.stdout).deleted.filter((entry: {kind: string}) => entry.kind === 'wal').map((entry: {id: string}) => entry.id).sort()
    expect(deleted).toEqual(Array.from({length: 9}, (_, index) => `wal/${name(index + 1)}.gz`))
    const requests = proxy.requests.slice(from)
    const walLists = listRequests(from).filter((request) => prefixOf(request.url).startsWith(`${PREFIX}/wal`))
    expect(walLists).toHaveLength(1)
    expect(listRequests(from).some((request) => /continuation-token/.test(request.url))).toBe(false)
    expect(listRequests(from).length).toBeLessThanOrEqual(4)
    expect(requests.filter((request) => request.method === 'DELETE')).toHaveLength(9)
    // What prune kept is all there.
    const remaining = (await fs.readdir(path.join(s3.directory, s3.bucket, PREFIX, 'wal'))).filter((entry) => entry.endsWith('.gz._S3rver_object'))
    expect(remaining).toHaveLength(SEGMENTS - 9)
  }, 300_000)
})
