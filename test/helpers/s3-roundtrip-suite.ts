import {ListObjectsV2Command} from '@aws-sdk/client-s3'
import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as net from 'node:net'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {collect, runCli, startCli, tempDir} from './cli'
import {PgCluster, startPostgres} from './postgres'
import {startRecordingProxy} from './recording-proxy'
import {S3Capabilities, S3Server} from './s3-server'
import {fingerprint, seedDatabase} from './seed'

const exec = promisify(execFile)
const MIB = 1024 * 1024

/** dbb's commands end to end on one S3 server (s3rver and Ceph RGW run it; see the two test files). */
export function s3RoundtripSuite(kind: string, capabilities: S3Capabilities, acquire: () => Promise<S3Server>): void {
  describe(`STORAGE_BACKEND=s3: backup run → list → download → restore, against ${kind}`, () => {
    let cluster: PgCluster
    let s3: S3Server
    let workDir: string

    beforeAll(async () => {
      ;[cluster, s3, workDir] = await Promise.all([startPostgres(), acquire(), tempDir()])
      await seedDatabase(cluster, 'shop')
      // ≈ 60 MB of SQL that gzip cannot shrink to nothing (hex digests): ≈ 30 MB stored, 6+ parts of 5 MiB.
      await cluster.psql('CREATE DATABASE big')
      await cluster.psql(
        `CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload
         FROM generate_series(1, 420000) g`,
        'big',
      )
    }, 180_000)

    afterAll(async () => {
      await Promise.all([cluster?.destroy(), s3?.destroy(), workDir && fs.rm(workDir, {recursive: true, force: true})])
    })

    /** Keys under a prefix, straight from the server (not through dbb). */
    async function objectKeys(prefix: string): Promise<string[]> {
      const page = await s3.client().send(new ListObjectsV2Command({Bucket: s3.bucket, Prefix: `${prefix}/`}))
      return (page.Contents ?? []).map((object) => object.Key!).sort()
    }

    it('stores the verified dump and its sidecar as <prefix>/<id>, lists, downloads and restores it with stock psql', async () => {
      const env = {...cluster.dbbEnv('shop'), ...s3.dbbEnv({S3_PREFIX: 'roundtrip'})}
      const result = await runCli(['backup', 'run', '--json'], env)
      expect(result.code).toBe(0)
      expect(result.stderr).not.toContain(cluster.password)
      const {metadata} = JSON.parse(result.stdout)
      expect(metadata).toMatchObject({type: 'logical', database: 'shop', compression: 'gzip', format: 'plain', triggeredBy: 'cli'})
      expect(await objectKeys('roundtrip')).toEqual([`roundtrip/${metadata.id}`, `roundtrip/${metadata.id}.meta.json`])

      const s3Only = s3.dbbEnv({S3_PREFIX: 'roundtrip'})
      const list = await runCli(['backup', 'list', '--json'], s3Only)
      expect(list.code).toBe(0)
      expect(JSON.parse(list.stdout)).toEqual([{...metadata, status: 'ok', drill: {status: 'never'}}])

      const copy = path.join(workDir, 'roundtrip.sql.gz')
      const download = await runCli(['backup', 'download', metadata.id, '-o', copy], s3Only)
      expect(download.code).toBe(0)
      const bytes = await fs.readFile(copy)
      expect(bytes.length).toBe(metadata.sizeBytes)
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(metadata.sha256)

      await cluster.psql('CREATE DATABASE restored')
      await exec('bash', ['-o', 'pipefail', '-c', `gunzip -c ${copy} | psql -X -q -v ON_ERROR_STOP=1 -d restored`], {
        env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password},
        maxBuffer: 64 * MIB,
      })
      expect(await fingerprint(cluster, 'restored')).toEqual(await fingerprint(cluster, 'shop'))
    })

    it('streams a dump of many parts (multipart upload with 5 MiB parts) intact', async () => {
      const proxy = await startRecordingProxy(() => s3.port)
      try {
        const env = {...cluster.dbbEnv('big'), ...s3.dbbEnv({S3_PREFIX: 'multipart', S3_PART_SIZE: '5MiB'}, proxy.endpoint)}
        const result = await runCli(['backup', 'run', '--json'], env)
        expect(result.code).toBe(0)
        const {metadata} = JSON.parse(result.stdout)
        expect(metadata.uncompressedBytes).toBeGreaterThan(50_000_000)
        const parts = proxy.requests.filter((request) => request.method === 'PUT' && /[?&]partNumber=\d+/.test(request.url))
        expect(parts.length).toBe(Math.ceil(metadata.sizeBytes / (5 * MIB)))
        expect(parts.length).toBeGreaterThanOrEqual(4)
        expect(parts.every((request) => request.status === 200)).toBe(true)

        const copy = path.join(workDir, 'big.sql.gz')
        const download = await runCli(['backup', 'download', 'latest', '-o', copy], s3.dbbEnv({S3_PREFIX: 'multipart'}))
        expect(download.code).toBe(0)
        expect(createHash('sha256').update(await fs.readFile(copy)).digest('hex')).toBe(metadata.sha256)
        await fs.rm(copy)
      } finally {
        await proxy.close()
      }
    }, 180_000)

    it('fails clearly when the server stops mid-upload, and leaves no listed backup', async () => {
      const proxy = await startRecordingProxy(() => s3.port)
      let stopping: Promise<unknown> | undefined
      proxy.onRequest((request) => {
        // The first part is on its way: the server and the way to it go down (a crash, a network cut).
        if (!stopping && request.method === 'PUT' && /[?&]partNumber=1(&|$)/.test(request.url)) stopping = Promise.all([s3.stop(), proxy.close()])
      })
      const env = {...cluster.dbbEnv('big'), ...s3.dbbEnv({S3_PREFIX: 'crash', S3_PART_SIZE: '5MiB'}, proxy.endpoint)}
      const result = await collect(startCli(['backup', 'run'], env)).finally(async () => {
        await stopping
        await Promise.all([s3.start(), proxy.close()])
      })

      expect(stopping).toBeDefined()
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(
        new RegExp(`backup failed: upload of crash/backup_\\S+ failed: (cannot reach the S3 endpoint ${proxy.endpoint}: connection refused|the connection to storage was lost after [\\d,]+ bytes: the S3 endpoint ${proxy.endpoint} closed it)`),
      )
      expect(result.stderr).not.toMatch(/\n\s+at /) // no stack trace
      const list = await runCli(['backup', 'list', '--json'], s3.dbbEnv({S3_PREFIX: 'crash'}))
      expect(list.code).toBe(0)
      expect(JSON.parse(list.stdout)).toEqual([])
      // The run's id claim could not be removed while the server was down: it is an unlisted
      // orphan (no dump, no sidecar), and prune removes it once it is older than ORPHAN_GRACE.
      const leftovers = await objectKeys('crash')
      expect(leftovers).toEqual([expect.stringMatching(/^crash\/backup_\d{8}T\d{6}Z\.sql\.gz\.[0-9a-f]+\.partial$/)])
      await new Promise((resolve) => setTimeout(resolve, 1100))
      const pruned = await runCli(['prune', '--json'], {...s3.dbbEnv({S3_PREFIX: 'crash'}), ORPHAN_GRACE: '1s'})
      // The claim, and (where the store lists them) the multipart upload the dead server could not abort.
      expect(JSON.parse(pruned.stdout).deleted).toEqual(
        capabilities.listMultipartUploads
          ? [expect.objectContaining({kind: 'orphan'}), expect.objectContaining({kind: 'staged'})]
          : [expect.objectContaining({kind: 'orphan'})],
      )
      expect(await objectKeys('crash')).toEqual([])
    }, 180_000)

    it('backup list and check against an endpoint that accepts connections and never answers: fail in seconds, naming it', async () => {
      const silent = net.createServer(() => undefined)
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
      const endpoint = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`
      try {
        for (const command of [['backup', 'list'], ['check']]) {
          const started = Date.now()
          const result = await runCli(command, s3.dbbEnv({S3_PREFIX: 'hung', S3_CONNECT_TIMEOUT: '1s', S3_REQUEST_TIMEOUT: '1s'}, endpoint))
          expect([command, result.code === 0]).toEqual([command, false])
          expect(result.stderr).toContain(`the S3 endpoint ${endpoint} stopped answering: nothing received for 1 s (S3_REQUEST_TIMEOUT`)
          // Before: 15 minutes per attempt, 3 attempts.
          expect(Date.now() - started).toBeLessThan(30_000)
        }
      } finally {
        silent.close()
      }
    }, 120_000)

    it('prune deletes both the dump and its sidecar', async () => {
      const env = {...cluster.dbbEnv('shop'), ...s3.dbbEnv({S3_PREFIX: 'prune'})}
      const first = JSON.parse((await runCli(['backup', 'run', '--json', '--no-prune'], env)).stdout).metadata
      const second = JSON.parse((await runCli(['backup', 'run', '--json', '--no-prune'], env)).stdout).metadata
      expect(await objectKeys('prune')).toHaveLength(4)

      const pruned = await runCli(['prune', '--json'], {...s3.dbbEnv({S3_PREFIX: 'prune'}), BACKUPS_TO_RETAIN: '1'})
      expect(pruned.code).toBe(0)
      expect(JSON.parse(pruned.stdout).deleted).toEqual([expect.objectContaining({id: first.id, kind: 'backup'})])
      expect(await objectKeys('prune')).toEqual([`prune/${second.id}`, `prune/${second.id}.meta.json`])
    })

    it('reports an unknown access key and a missing bucket in clear words, before anything is written', async () => {
      const badKey = await runCli(['backup', 'run'], {
        ...cluster.dbbEnv('shop'),
        ...s3.dbbEnv({S3_PREFIX: 'denied', AWS_ACCESS_KEY_ID: 'AKIANOTAKEY', AWS_SECRET_ACCESS_KEY: 'not-the-secret-123'}),
      })
      expect(badKey.code).toBe(1)
      expect(badKey.stderr).toMatch(
        new RegExp(`storage s3 \\(s3://${s3.bucket}/denied\\) is not usable: .*access key is not known to http://127\\.0\\.0\\.1:\\d+ \\(InvalidAccessKeyId\\); check AWS_ACCESS_KEY_ID`),
      )
      expect(badKey.stderr).not.toContain('not-the-secret-123')

      const noBucket = await runCli(['backup', 'run'], {...cluster.dbbEnv('shop'), ...s3.dbbEnv({S3_BUCKET: 'missing-bucket'})})
      expect(noBucket.code).toBe(1)
      expect(noBucket.stderr).toMatch(/bucket "missing-bucket" does not exist at http:\/\/127\.0\.0\.1:\d+ \(create it, or check S3_BUCKET and S3_ENDPOINT\)/)
      expect(await objectKeys('denied')).toEqual([])
    })
  })
}
