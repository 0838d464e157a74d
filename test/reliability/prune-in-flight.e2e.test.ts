import * as fs from 'node:fs/promises'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {releaseLock, lockTable, sleep, waitUntilDumpBlocked, waitUntilLocked} from '../helpers/fault-invariants'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {seedDatabase} from '../helpers/seed'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'
const GRACE = '2s'

/**
 * Issue 11 hole 7: pg_dump waits on a table lock for longer than ORPHAN_GRACE while a prune runs in
 * another process. The running backup refreshes its id claim (src/backup/claim-id.ts) and prune
 * measures an id's age from its newest write, so nothing of the running backup is deleted; once
 * the lock is released the backup completes and is listed. On local storage the in-flight dump is
 * a `.partial` file; on S3 the multipart upload has no object yet and the claim is all there is.
 */
describe.each(['local', 's3'] as const)('prune while a backup waits on a lock (%s)', (backend) => {
  let cluster: PgCluster
  let s3: S3Server | undefined
  let dir: string

  const storageEnv = (): Record<string, string> => (backend === 's3' ? s3!.dbbEnv({S3_PREFIX: 'inflight'}) : {BACKUP_LOCAL_DIR: dir})

  beforeAll(async () => {
    ;[cluster, s3] = await Promise.all([startPostgres(), backend === 's3' ? startS3Server() : Promise.resolve(undefined)])
    await seedDatabase(cluster, 'shop', 2000)
    dir = await tempDir()
  }, 60_000)

  afterAll(async () => {
    await Promise.all([cluster?.destroy(), s3?.destroy(), fs.rm(dir, {recursive: true, force: true})])
  })

  it('deletes nothing of the running backup, which then completes and is listed', async () => {
    const locker = lockTable(cluster, 'shop', 'events')
    let backup: ReturnType<typeof startCli> | undefined
    try {
      await waitUntilLocked(cluster, 'shop', 'events')
      backup = startCli(['backup', 'run', '--json'], {...cluster.dbbEnv('shop'), ...storageEnv(), ORPHAN_GRACE: GRACE})
      const finished = collect(backup)
      await waitUntilDumpBlocked(cluster)
      // Well past the grace since the claim (and, locally, the .partial dump) was first written.
      await sleep(4000)
      const inFlight = await runCli(['prune', '--json'], {...storageEnv(), ORPHAN_GRACE: GRACE})
      expect(inFlight.code).toBe(0)
      expect(JSON.parse(inFlight.stdout).deleted).toEqual([])

      await releaseLock(cluster, locker)
      const result = await finished
      expect(result.code).toBe(0)
      const {id} = JSON.parse(result.stdout).metadata
      const list = await runCli(['backup', 'list', '--json'], storageEnv())
      expect(list.code).toBe(0)
      expect(JSON.parse(list.stdout).map((entry: {id: string; status: string}) => [entry.id, entry.status])).toEqual([[id, 'ok']])
    } finally {
      await releaseLock(cluster, locker)
      if (backup && backup.exitCode === null) backup.kill('SIGKILL')
    }
  }, 90_000)
})
