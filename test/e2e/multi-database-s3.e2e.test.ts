import {ListObjectsV2Command} from '@aws-sdk/client-s3'

import {runCli} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'

interface RunJson {
  status: string
  globals: {backupId: string | null; status: string} | null
  databases: {database: string; backupId: string | null; status: string; error: string | null}[]
}

/** Several databases and the globals on S3 (a real s3rver process through the AWS SDK), restored onto a new server. */
describe('DB_NAMES and restore --globals on S3 (s3rver, real PostgreSQL)', () => {
  let source: PgCluster
  let s3: S3Server

  beforeAll(async () => {
    source = await startPostgres()
    s3 = await startS3Server()
    await source.psql(`CREATE ROLE owner_role NOLOGIN; CREATE ROLE app_user LOGIN PASSWORD 'app-user-pw' IN ROLE owner_role`)
    for (const name of ['app', '"bill_ü"']) await source.psql(`CREATE DATABASE ${name} OWNER owner_role`)
    await source.psql(`SET ROLE owner_role; CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 250)`, 'app')
    await source.psql(`CREATE TABLE lines (id int)`, 'bill_ü')
  }, 60_000)

  afterAll(async () => {
    await source?.destroy()
    await s3?.destroy()
  })

  const keys = async () => ((await s3.client().send(new ListObjectsV2Command({Bucket: s3.bucket}))).Contents ?? []).map((object) => (object.Key as string).replace(/^backups\//, ''))

  it('a database failing mid-stream stores nothing of it on S3, the other is complete; a new server gets roles and data back', async () => {
    const env = {...source.dbbEnv('postgres'), ...s3.dbbEnv()}
    const release = await holdTableLock(source, 'bill_ü', 'lines')
    const running = runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'bill_ü,app', S3_CONDITIONAL_WRITES: 'false'})
    try {
      const deadline = Date.now() + 30_000
      while ((await source.psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = 'bill_ü' AND wait_event_type = 'Lock' AND application_name = 'dbb'`)) !== '1') {
        if (Date.now() > deadline) throw new Error('pg_dump of bill_ü never waited on the lock')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }

      await source.psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'bill_ü' AND wait_event_type = 'Lock' AND application_name = 'dbb'`)
    } finally {
      await release()
    }

    const result = await running
    expect(result.code).toBe(3)
    const run = JSON.parse(result.stdout) as RunJson
    expect(run.databases.map((part) => [part.database, part.status])).toEqual([['bill_ü', 'failed'], ['app', 'succeeded']])
    const stored = await keys()
    // Exactly the two complete backups: nothing of bill_ü (no dump, no claim, no sidecar), no leftover claim of the others.
    expect(stored.filter((key) => key.startsWith('backup_bill-5f-c3-bc'))).toEqual([])
    expect(stored.sort()).toEqual([run.globals?.backupId, `${run.globals?.backupId}.meta.json`, run.databases[1].backupId, `${run.databases[1].backupId}.meta.json`].sort())

    const again = await runCli(['backup', 'run', '--json'], {...env, DB_NAMES: 'bill_ü,app', S3_CONDITIONAL_WRITES: 'false'})
    expect(again.code).toBe(0)
    const list = await runCli(['backup', 'list', '--json', '--db', 'bill_ü'], s3.dbbEnv())
    expect(JSON.parse(list.stdout).map((entry: {database: string; status: string}) => [entry.database, entry.status])).toEqual([['bill_ü', 'ok']])

    const fresh = await startPostgres()
    try {
      const freshEnv = {...fresh.dbbEnv('postgres'), ...s3.dbbEnv()}
      for (const database of ['app', 'bill_ü']) {
        const restored = await runCli(['restore', 'latest', '--db', database, '--globals', '--force', '--json'], freshEnv)
        expect(restored.stderr).not.toContain('app-user-pw')
        expect([database, restored.code]).toEqual([database, 0])
      }

      expect(await fresh.psql('SELECT count(*) FROM orders', 'app')).toBe('250')
      expect(await fresh.psql(`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'bill_ü'`)).toBe('owner_role')
      expect(await fresh.psql(`SELECT pg_has_role('app_user', 'owner_role', 'MEMBER')`)).toBe('t')
    } finally {
      await fresh.destroy()
    }
  }, 180_000)
})
