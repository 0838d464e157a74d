import {ListMultipartUploadsCommand, ListObjectsV2Command} from '@aws-sdk/client-s3'
import {ChildProcess} from 'node:child_process'

import {collect, runCli, startCli} from './cli'
import {KnownBackup, backupSucceeds, expectEarlierBackupsIntact, listIds, sleep} from './fault-invariants'
import {PgCluster, freePort, startPostgres} from './postgres'
import {RecordingProxy, startRecordingProxy} from './recording-proxy'
import {S3Capabilities, S3Server} from './s3-server'
import {seedDatabase} from './seed'

const PREFIX = 'faults'
const isUploadPart = (request: {method: string; url: string}) => request.method === 'PUT' && /[?&]partNumber=\d+/.test(request.url)

/**
 * Issue 8's fault matrix on S3, against the real S3-protocol test server (s3rver, its own process)
 * with the suite's fault-injecting proxy (test/helpers/recording-proxy.ts) between the SDK in the
 * spawned dbb and the server. After every fault: exactly the earlier backups are listed and
 * download with their sha256 (BACKUPS_TO_RETAIN=1 on the failing run, so a retention pass that
 * ran would have deleted one), the bucket holds nothing else under the prefix, and the next
 * backup succeeds.
 */
export function s3FaultsSuite(kind: string, capabilities: S3Capabilities, acquire: () => Promise<S3Server>): void {
  describe(`fault injection: S3 storage (real PostgreSQL, ${kind})`, () => {
    let cluster: PgCluster
    let s3: S3Server
    let proxy: RecordingProxy | undefined
    const known: KnownBackup[] = []

    const storageEnv = () => s3.dbbEnv({S3_PREFIX: PREFIX})
    /** A run of the big database (≈ 5 MB compressed: two 5 MiB parts at most) through the proxy. */
    const bigRunEnv = (endpoint: string) => ({
      ...cluster.dbbEnv('big'),
      ...s3.dbbEnv({S3_PREFIX: PREFIX, S3_PART_SIZE: '5MiB', BACKUPS_TO_RETAIN: '1'}, endpoint),
    })

    /** Keys of the multipart uploads still open under the prefix (a store that can list them). */
    async function incompleteUploads(): Promise<string[]> {
      const page = await s3.client().send(new ListMultipartUploadsCommand({Bucket: s3.bucket, Prefix: `${PREFIX}/`}))
      return (page.Uploads ?? []).map((upload) => upload.Key!)
    }

    async function objectKeys(): Promise<string[]> {
      const page = await s3.client().send(new ListObjectsV2Command({Bucket: s3.bucket, Prefix: `${PREFIX}/`}))
      return (page.Contents ?? []).map((object) => object.Key!.slice(PREFIX.length + 1)).sort()
    }

    beforeAll(async () => {
      ;[cluster, s3] = await Promise.all([startPostgres(), acquire()])
      await seedDatabase(cluster, 'shop', 5000)
      await cluster.psql('CREATE DATABASE big')
      await cluster.psql(
        `CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload
         FROM generate_series(1, 110000) g`,
        'big',
      )
      const env = {...cluster.dbbEnv('shop'), ...storageEnv()}
      known.push(await backupSucceeds(env), await backupSucceeds(env))
    }, 120_000)

    afterAll(async () => {
      await proxy?.close()
      await Promise.all([cluster?.destroy(), s3?.destroy()])
    })

    afterEach(async () => {
      await proxy?.close()
      proxy = undefined
      await s3.start()
      expect(await objectKeys()).toEqual(known.flatMap((backup) => [backup.id, `${backup.id}.meta.json`]).sort())
      await expectEarlierBackupsIntact(storageEnv(), known)
      known.push(await backupSucceeds({...cluster.dbbEnv('shop'), ...storageEnv()}))
    }, 300_000) // a backup plus a download and check of every earlier one: minutes on a loaded 2-core machine

    /**
     * A run that could not clean up leaves only its id claim (`<id>.<token>.partial`, see
     * src/backup/claim-id.ts): never listed, kept by prune within ORPHAN_GRACE, deleted after it.
     */
    async function expectOnlyClaimLeftThenPruned(): Promise<void> {
      const complete = known.flatMap((backup) => [backup.id, `${backup.id}.meta.json`])
      const leftovers = (await objectKeys()).filter((key) => !complete.includes(key))
      expect(leftovers).toEqual([expect.stringMatching(/^backup_\d{8}T\d{6}Z(-\d+)?\.sql\.gz\.[0-9a-f]{16}\.partial$/)])
      const pruneEnv = {...storageEnv(), RETENTION_DAYS: '0'}
      const early = await runCli(['prune', '--json'], {...pruneEnv, ORPHAN_GRACE: '1h'})
      expect([early.code, JSON.parse(early.stdout).deleted]).toEqual([0, []])
      await sleep(1500)
      // --dry-run reports the same entries and removes nothing.
      const preview = await runCli(['prune', '--json', '--dry-run'], {...pruneEnv, ORPHAN_GRACE: '1s'})
      expect(preview.code).toBe(0)
      const previewKinds = (JSON.parse(preview.stdout).deleted as {kind: string}[]).map((entry) => entry.kind).sort()
      expect(previewKinds).toEqual(capabilities.listMultipartUploads ? ['orphan', 'staged'] : ['orphan'])
      expect(await objectKeys()).toContain(leftovers[0])
      if (capabilities.listMultipartUploads) expect(await incompleteUploads()).toHaveLength(1)
      const late = await runCli(['prune', '--json'], {...pruneEnv, ORPHAN_GRACE: '1s'})
      expect(late.code).toBe(0)
      const deleted = JSON.parse(late.stdout).deleted as {id: string; kind: string}[]
      expect(deleted.filter((entry) => entry.kind === 'orphan')).toEqual([expect.objectContaining({id: leftovers[0]})])
      // The run's multipart upload, which nobody could abort: swept where the store can list them.
      const staged = deleted.filter((entry) => entry.kind === 'staged')
      if (capabilities.listMultipartUploads) {
        expect(staged).toEqual([expect.objectContaining({id: leftovers[0].replace(/\.[0-9a-f]{16}\.partial$/, '')})])
        expect(await incompleteUploads()).toEqual([])
      } else expect(staged).toEqual([])
    }

    it('storage unreachable at start: exit 1 naming the endpoint, before pg_dump runs', async () => {
      const port = await freePort()
      const {code, stderr} = await runCli(['backup', 'run'], bigRunEnv(`http://127.0.0.1:${port}`))
      expect(code).toBe(1)
      expect(stderr).toMatch(new RegExp(`Error: storage s3 \\(s3://${s3.bucket}/${PREFIX}\\) is not usable: .*127\\.0\\.0\\.1:${port}`))
      expect(stderr).not.toContain('backup.started')
    })

    it('S3 server killed mid-upload: exit 1 naming the unreachable endpoint', async () => {
      proxy = await startRecordingProxy(() => s3.port)
      const cut = proxy
      let stopping: Promise<unknown> | undefined
      cut.onRequest((request) => {
        if (!stopping && isUploadPart(request)) stopping = Promise.all([s3.stop(), cut.close()])
      })
      const {code, stderr} = await runCli(['backup', 'run'], bigRunEnv(cut.endpoint))
      await stopping
      expect(stopping).toBeDefined()
      expect(code).toBe(1)
      expect(stderr).toMatch(/Error: backup failed: upload of faults\/backup_\S+ failed: (cannot reach the S3 endpoint|the connection to storage was lost after [\d,]+ bytes: the S3 endpoint)/)

      // The server was gone when the run cleaned up, so its id claim could not be removed: an
      // unlisted orphan that prune deletes once older than ORPHAN_GRACE.
      await s3.start()
      await expectOnlyClaimLeftThenPruned()
    })

    it('S3 answering 503 and 500 to some requests: the SDK retries them and the backup succeeds intact', async () => {
      proxy = await startRecordingProxy(() => s3.port)
      proxy.inject({match: isUploadPart, status: 503, code: 'SlowDown', message: 'Please reduce your request rate.', times: 2})
      proxy.inject({
        match: (request) => request.method === 'PUT' && request.url.split('?')[0].endsWith('.meta.json'),
        status: 500,
        code: 'InternalError',
        message: 'We encountered an internal error. Please try again.',
      })
      const backup = await backupSucceeds(bigRunEnv(proxy.endpoint))
      known.push(backup)
      const statuses = proxy.requests.map((request) => request.status)
      expect(statuses.filter((status) => status === 503)).toHaveLength(2)
      expect(statuses.filter((status) => status === 500)).toHaveLength(1)
      // Each failed request was sent again and then answered 200.
      const sidecarPuts = proxy.requests.filter((request) => request.method === 'PUT' && request.url.split('?')[0].endsWith('.meta.json'))
      expect(sidecarPuts.map((request) => request.status)).toEqual([500, 200])
    })

    it('S3 answering 503 to every part upload: the job fails naming the error, nothing is listed', async () => {
      proxy = await startRecordingProxy(() => s3.port)
      proxy.inject({match: isUploadPart, status: 503, code: 'SlowDown', message: 'Please reduce your request rate.', times: 10_000})
      const {code, stderr} = await runCli(['backup', 'run'], bigRunEnv(proxy.endpoint))
      expect(code).toBe(1)
      expect(stderr).toMatch(/Error: backup failed: upload of faults\/backup_\S+ failed: .*(SlowDown|503|reduce your request rate)/)
      // Retried, then given up: more than one attempt per part, a bounded number in all.
      const parts = proxy.requests.filter(isUploadPart)
      expect(parts.length).toBeGreaterThan(1)
      expect(parts.length).toBeLessThan(50)
    })

    it('dbb killed with SIGKILL mid-upload: nothing is listed, and prune removes what is left after ORPHAN_GRACE', async () => {
      proxy = await startRecordingProxy(() => s3.port)
      let child: ChildProcess | undefined
      let killed = false
      proxy.onRequest((request) => {
        if (!killed && isUploadPart(request)) {
          killed = true
          child?.kill('SIGKILL')
        }
      })
      child = startCli(['backup', 'run'], bigRunEnv(proxy.endpoint))
      const result = await collect(child)
      expect(killed).toBe(true)
      expect(result.code).toBeNull() // killed by the signal
      expect(proxy.requests.some((request) => request.method === 'POST' && request.url.includes('?uploads'))).toBe(true)

      // "After a restart": a new dbb process lists only the complete backups.
      expect((await listIds(storageEnv())).map((backup) => backup.id).sort()).toEqual(known.map((backup) => backup.id).sort())
      // What the crash leaves is the run's id claim; the incomplete multipart upload itself is no
      // object (a bucket lifecycle rule expires its parts, see README).
      await expectOnlyClaimLeftThenPruned()
    })

    it('three backup runs at once on the same bucket (no conditional writes on this server): all complete with distinct ids', async () => {
      const env = {...cluster.dbbEnv('shop'), ...storageEnv()}
      const runs = await Promise.all([1, 2, 3].map(() => runCli(['backup', 'run', '--json', '--no-prune'], env)))
      expect(runs.map((run) => [run.code, run.code === 0 ? '' : run.stdout])).toEqual([
        [0, ''],
        [0, ''],
        [0, ''],
      ])
      const backups = runs.map((run) => JSON.parse(run.stdout).metadata as KnownBackup)
      expect(new Set(backups.map((backup) => backup.id)).size).toBe(3)
      known.push(...backups)
    })
  })
}
