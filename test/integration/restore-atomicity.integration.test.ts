import * as fs from 'node:fs/promises'
import {Readable} from 'node:stream'
import {setTimeout as sleep} from 'node:timers/promises'
import {gzipSync} from 'node:zlib'

import {resolveBackup} from '../../src/backup/metadata'
import type {DatabaseConfig} from '../../src/config'
import {AbortedError, OperationError} from '../../src/errors'
import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src'
import {restoreLogical} from '../../src/restore/logical'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'
import {writeCraftedBackup} from '../helpers/crafted-backup'
import {PgCluster, startPostgres} from '../helpers/postgres'

/** Enough statements that part of the gzip stream decompresses to complete, executable SQL. */
const TWO_HALVES = [
  'CREATE TABLE first_half (id int, note text);',
  ...Array.from({length: 3000}, (_, i) => `INSERT INTO first_half VALUES (${i}, '${'n'.repeat(i % 40)}');`),
  'CREATE TABLE second_half (id int);',
].join('\n')

/** A backend that serves the real dump on its first read (the verifying pass) and `second()` afterwards. */
function changingBackend(inner: StorageBackend, second: () => Readable): StorageBackend {
  let dumpReads = 0
  const isDump = (key: string) => key.endsWith('.sql.gz')
  return {
    name: inner.name,
    location: inner.location,
    put: (key, body, options) => inner.put(key, body, options),
    get: async (key, options) => (!isDump(key) || ++dumpReads === 1 ? inner.get(key, options) : second()),
    stat: (key) => inner.stat(key),
    list: (prefix) => inner.list(prefix),
    delete: (key) => inner.delete(key),
    health: () => inner.health(),
  }
}

describe('restoreLogical atomicity: psql never sees end-of-input unless the whole verified dump was fed (real PostgreSQL)', () => {
  let cluster: PgCluster
  let dir: string
  let storage: LocalBackend
  const logger = createLogger({level: 'silent'})
  const database = (): DatabaseConfig => ({host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, database: 'unused'})
  const tablesIn = (name: string) =>
    cluster.psql(`SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables WHERE schemaname = 'public'`, name)

  beforeAll(async () => {
    cluster = await startPostgres()
    dir = await tempDir()
    storage = new LocalBackend(dir)
    await writeCraftedBackup(dir, TWO_HALVES)
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  /** Resolves once psql has run statements in `name` and waits for more input inside its open transaction. */
  async function psqlMidTransaction(name: string): Promise<void> {
    const openTransaction = `SELECT count(*) FROM pg_stat_activity WHERE datname = '${name}' AND state = 'idle in transaction'`
    for (let attempt = 0; (await cluster.psql(openTransaction)) !== '1'; attempt++) {
      if (attempt > 100) throw new Error('psql never opened its transaction')
      await sleep(100)
    }
  }

  it('rolls back when the object is replaced between the verifying pass and the import (valid SQL, wrong sha256)', async () => {
    const replacement = new Readable({read() {}})
    replacement.push(gzipSync(Buffer.from('CREATE TABLE planted (id int);\nINSERT INTO planted VALUES (1);\n')))
    const backend = changingBackend(storage, () => replacement)
    const backup = await resolveBackup(backend, 'latest')

    const restore = restoreLogical({database: database(), storage: backend, logger}, {backup, targetDatabase: 'swapped'})
    restore.catch(() => {})
    // psql has executed the planted SQL; only the end of the object (and its sha256) is still to come.
    await psqlMidTransaction('swapped')
    replacement.push(null)
    await expect(restore).rejects.toThrow(OperationError)
    await expect(restore).rejects.toThrow(/changed in storage during the restore[\s\S]*rolled back: database "swapped" exists and is empty/)
    expect(await tablesIn('swapped')).toBe('')
  })

  it('rolls back when interrupted mid-import, after psql has already executed part of the dump', async () => {
    const body = await fs.readFile(`${dir}/backup_20260101T000000Z.sql.gz`)
    const stalled = new Readable({read() {}})
    stalled.push(body.subarray(0, Math.floor(body.length * 0.7))) // and then nothing: the import stalls mid-way
    const backend = changingBackend(storage, () => stalled)
    const backup = await resolveBackup(backend, 'latest')
    const controller = new AbortController()

    const restore = restoreLogical({database: database(), storage: backend, logger}, {backup, targetDatabase: 'interrupted', signal: controller.signal})
    restore.catch(() => {})
    await psqlMidTransaction('interrupted')

    expect(Number(await cluster.psql(`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.datname = 'interrupted' WHERE l.locktype = 'relation' AND l.database = d.oid`))).toBeGreaterThan(0)
    controller.abort()
    await expect(restore).rejects.toThrow(AbortedError)
    await expect(restore).rejects.toThrow(/restore interrupted; the import was rolled back: database "interrupted" exists and is empty/)
    expect(await tablesIn('interrupted')).toBe('')
  })

  it('commits when the dump is whole and matches its sidecar', async () => {
    const backup = await resolveBackup(storage, 'latest')
    const outcome = await restoreLogical({database: database(), storage, logger}, {backup, targetDatabase: 'complete'})
    expect(outcome).toMatchObject({database: 'complete', replacedExisting: false, restoredBytes: Buffer.byteLength(TWO_HALVES)})
    expect(await tablesIn('complete')).toBe('first_half,second_half')
    expect(await cluster.psql('SELECT count(*) FROM first_half', 'complete')).toBe('3000')
  })
})
