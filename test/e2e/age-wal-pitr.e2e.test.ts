import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, waitFor, waitForPromotion} from '../helpers/wal'

const exec = promisify(execFile)
const AGE_MAGIC = 'age-encryption.org/v1\n'

/** Encrypted base backup and encrypted WAL (ENCRYPTION_RECIPIENTS in archive_command): wal fetch's exit contract and a PITR restore. */
describe('point-in-time recovery from an age-encrypted base backup and age-encrypted WAL (real PostgreSQL, real age)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let keyDir: string
  let identity: string
  let stranger: string
  let recipient: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-pitr-age-')
    // restore_command runs as the server's user: the identity must be readable by it.
    keyDir = await makeServerOwnedDir('dbb-pitr-age-keys-')
    identity = path.join(keyDir, 'key.txt')
    stranger = path.join(keyDir, 'stranger.txt')
    await exec('age-keygen', ['-o', identity])
    await exec('age-keygen', ['-o', stranger])
    for (const file of [identity, stranger]) await fs.chmod(file, 0o644)
    recipient = (await exec('age-keygen', ['-y', identity])).stdout.trim()
    const settings = archivingSettings(storeDir)
    // archive_command runs through the shell with the server's environment: the setting goes in the command.
    cluster = await startPostgres({settings: {...settings, archive_command: settings.archive_command.replace(/^'/, `'ENCRYPTION_RECIPIENTS=${recipient} `)}})
  }, 60_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(keyDir, {recursive: true, force: true})
  })

  it('stores .tar.gz.age and wal/<seg>.gz.age; wal fetch without or with a wrong identity is fatal (200); restore --type base replays it all', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g')
    const backup = await runCli(['backup', 'run', '--type', 'base', '--json'], {...db.dbbEnv(), BACKUP_LOCAL_DIR: storeDir, ENCRYPTION_RECIPIENTS: recipient})
    expect(backup.code).toBe(0)
    const {metadata} = JSON.parse(backup.stdout)
    expect(metadata.id).toMatch(/\.tar\.gz\.age$/)
    expect(metadata).toMatchObject({type: 'base', encryption: {format: 'age'}})
    expect((await fs.readFile(path.join(storeDir, metadata.id))).subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC)

    await db.psql('INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1001, 1500) g')
    const segment = await db.psql('SELECT pg_walfile_name(pg_switch_wal())')
    const walFile = path.join(storeDir, 'wal', `${segment}.gz.age`)
    await waitFor(`${segment} archived`, async () => ((await fs.stat(walFile).catch(() => undefined)) ? true : undefined))
    expect((await fs.readFile(walFile)).subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC)

    // restore_command's contract: the file is there, so an identity problem is fatal, never "not in archive".
    const dest = path.join(keyDir, 'RECOVERYXLOG')
    const noIdentity = await runCli(['wal', 'fetch', segment, dest], {BACKUP_LOCAL_DIR: storeDir})
    expect([noIdentity.code, noIdentity.stderr]).toEqual([200, expect.stringMatching(/archived encrypted.*AGE_IDENTITY_FILE/)])
    const wrong = await runCli(['wal', 'fetch', segment, dest, '--storage', 'local', '--age-identity-file', stranger], {BACKUP_LOCAL_DIR: storeDir})
    expect([wrong.code, wrong.stderr]).toEqual([200, expect.stringMatching(/AGE_IDENTITY_FILE: the identity in .*stranger\.txt is not one of the recipients/)])
    await expect(fs.access(dest)).rejects.toThrow()
    const missing = await runCli(['wal', 'fetch', '0000000100000000000000FF', dest], {BACKUP_LOCAL_DIR: storeDir, AGE_IDENTITY_FILE: identity})
    expect(missing.code).toBe(1)

    await db.stop()
    await fs.rm(db.dataDir, {recursive: true, force: true})
    // A wrong identity: refused before the data directory is touched.
    const refused = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir], {BACKUP_LOCAL_DIR: storeDir, AGE_IDENTITY_FILE: stranger})
    expect(refused.code).toBe(2)
    expect(await fs.readdir(db.dataDir).catch(() => [])).toEqual([])

    const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir, '--json'], {BACKUP_LOCAL_DIR: storeDir, AGE_IDENTITY_FILE: identity})
    expect(restore.code).toBe(0)
    const {restoreCommand} = JSON.parse(restore.stdout)
    // The path of the identity, never its content.
    expect(restoreCommand).toContain(`--age-identity-file ${identity}`)
    expect(restoreCommand).not.toContain('AGE-SECRET-KEY')
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql('SELECT count(*), max(id) FROM orders')).toBe('1500|1500')
  }, 300_000)
})
