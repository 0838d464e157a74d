import {GetObjectCommand} from '@aws-sdk/client-s3'
import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'
import {S3Server, startS3Server} from '../helpers/s3-server'
import {fingerprint as fullFingerprint, seedDatabase} from '../helpers/seed'

const exec = promisify(execFile)
const AGE_MAGIC = 'age-encryption.org/v1\n'
/** Table data that must never reach storage in the clear. */
const MARKER = 'PLAINTEXT-MARKER-4c1d-never-stored'

interface Keys {
  dir: string
  /** age identity file of the recipient, and its public key. */
  identity: string
  recipient: string
  /** An SSH key pair used as a second recipient: its private key decrypts too. */
  sshIdentity: string
  sshRecipient: string
  /** An age identity that is NOT a recipient. */
  stranger: string
  secretLines: string[]
}

async function makeKeys(): Promise<Keys> {
  const dir = await tempDir('dbb-age-keys-')
  const identity = path.join(dir, 'key.txt')
  const stranger = path.join(dir, 'stranger.txt')
  await exec('age-keygen', ['-o', identity])
  await exec('age-keygen', ['-o', stranger])
  const recipient = (await exec('age-keygen', ['-y', identity])).stdout.trim()
  const sshIdentity = path.join(dir, 'id_ed25519')
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'dbb-test', '-f', sshIdentity])
  const sshRecipient = (await fs.readFile(`${sshIdentity}.pub`, 'utf8')).trim()
  const secretLines = [
    ...(await fs.readFile(identity, 'utf8')).split('\n').filter((line) => line.startsWith('AGE-SECRET-KEY-')),
    ...(await fs.readFile(sshIdentity, 'utf8')).split('\n').filter((line) => line.length > 40 && !line.startsWith('-----')),
  ]
  expect(secretLines.length).toBeGreaterThanOrEqual(2)
  return {dir, identity, recipient, sshIdentity, sshRecipient, stranger, secretLines}
}

describe('ENCRYPTION_RECIPIENTS / AGE_IDENTITY_FILE: age-encrypted logical backups and globals (real PostgreSQL, real age, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let keys: Keys
  let env: Record<string, string>
  let pgEnv: NodeJS.ProcessEnv
  const outputs: string[] = []

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 20_000)
    await cluster.psql(`CREATE TABLE notes (body text); INSERT INTO notes SELECT '${MARKER} ' || g FROM generate_series(1, 200) g`, 'shop')
    backupDir = await tempDir()
    keys = await makeKeys()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir, LOG_LEVEL: 'debug'}
    pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
  }, 60_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
    await fs.rm(keys.dir, {recursive: true, force: true})
  })

  /** Every run's output, for the secrets check at the end. */
  async function cli(args: string[], extra: Record<string, string | undefined> = {}) {
    const result = await runCli(args, {...env, ...extra})
    outputs.push(result.stdout, result.stderr)
    return result
  }

  const encrypted = () => ({ENCRYPTION_RECIPIENTS: `${keys.recipient},\n${keys.sshRecipient}`})
  const listIds = async () => JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout).map((b: {id: string}) => b.id) as string[]
  const stagingDatabases = () => cluster.psql(`SELECT count(*) FROM pg_database WHERE datname ~ '_dbb_(staging|replaced)_'`)

  let dumpId: string
  let globalsId: string

  it('stores an age file (…sql.gz.age, no plaintext), sidecar with fingerprints; age -d | gunzip | psql restores the same rows', async () => {
    const result = await cli(['backup', 'run', '--json', '--no-prune'], {...encrypted(), BACKUP_GLOBALS: 'true'})
    expect(result.code).toBe(0)
    const {metadata} = JSON.parse(result.stdout)
    dumpId = metadata.id
    expect(dumpId).toMatch(/^backup_\d{8}T\d{6}Z(-\d+)?\.sql\.gz\.age$/)
    expect(metadata).toMatchObject({type: 'logical', compression: 'gzip', encryption: {format: 'age'}})
    const sha = (text: string) => `SHA256:${createHash('sha256').update(text).digest('base64').replace(/=+$/, '')}`
    // The SSH key's comment is not part of the key: the fingerprint is of type and blob.
    expect(metadata.encryption.recipients).toEqual([sha(keys.recipient), sha(keys.sshRecipient.split(' ').slice(0, 2).join(' '))])
    expect(JSON.stringify(metadata)).not.toContain(keys.recipient)

    const stored = await fs.readFile(path.join(backupDir, dumpId))
    expect(stored.subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC)
    expect(stored.includes(Buffer.from(MARKER))).toBe(false)
    expect(stored.length).toBe(metadata.sizeBytes)
    expect(createHash('sha256').update(stored).digest('hex')).toBe(metadata.sha256)

    const ids = await listIds()
    globalsId = ids.find((id) => id.startsWith('backup_-globals_'))!
    expect(globalsId).toMatch(/\.sql\.gz\.age$/)
    const globals = await fs.readFile(path.join(backupDir, globalsId))
    expect(globals.subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC)
    expect(globals.includes(Buffer.from('CREATE ROLE'))).toBe(false)

    // Stock tools, with either recipient's private key.
    for (const [database, identity] of [['stock_age', keys.identity], ['stock_ssh', keys.sshIdentity]]) {
      await cluster.psql(`CREATE DATABASE ${database}`)
      await exec('bash', ['-o', 'pipefail', '-c', `age -d -i ${identity} ${path.join(backupDir, dumpId)} | gunzip | psql -X -q -v ON_ERROR_STOP=1 -d ${database}`], {env: pgEnv, maxBuffer: 64 * 1024 * 1024})
      expect(await fingerprint(cluster, database)).toEqual(await fingerprint(cluster, 'shop'))
      expect(await cluster.psql('SELECT count(*) FROM notes', database)).toBe('200')
    }
  })

  it('dbb restore decrypts in one stream with AGE_IDENTITY_FILE (age identity or SSH key), replacing the target', async () => {
    const expected = await fingerprint(cluster, 'shop')
    for (const identity of [keys.identity, keys.sshIdentity]) {
      await cluster.psql('DELETE FROM customers WHERE id % 2 = 0; DELETE FROM notes', 'shop')
      const restore = await cli(['restore', dumpId, '--force', '--json'], {AGE_IDENTITY_FILE: identity})
      expect(restore.code).toBe(0)
      expect(JSON.parse(restore.stdout)).toMatchObject({id: dumpId, database: 'shop'})
      expect(await fingerprint(cluster, 'shop')).toEqual(expected)
      expect(await cluster.psql('SELECT count(*) FROM notes', 'shop')).toBe('200')
    }
  })

  it('a wrong identity or none: exit 2 naming AGE_IDENTITY_FILE before anything is touched (target unchanged, no staging database)', async () => {
    await cluster.psql('DELETE FROM notes WHERE body LIKE \'% 1%\'', 'shop')
    const before = await fingerprint(cluster, 'shop')
    const notes = await cluster.psql('SELECT count(*) FROM notes', 'shop')
    const cases: Array<[Record<string, string | undefined>, RegExp]> = [
      [{AGE_IDENTITY_FILE: keys.stranger}, /AGE_IDENTITY_FILE: the identity in .*stranger\.txt is not one of the recipients/],
      [{AGE_IDENTITY_FILE: undefined}, /AGE_IDENTITY_FILE: .*is encrypted with age: set AGE_IDENTITY_FILE/],
      [{AGE_IDENTITY_FILE: path.join(keys.dir, 'missing.txt')}, /AGE_IDENTITY_FILE: .*missing\.txt cannot be read \(ENOENT\)/],
    ]
    for (const [extra, message] of cases) {
      const restore = await cli(['restore', dumpId, '--force'], extra)
      expect([restore.code, restore.stderr]).toEqual([2, expect.stringMatching(message)])
      expect(await fingerprint(cluster, 'shop')).toEqual(before)
      expect(await cluster.psql('SELECT count(*) FROM notes', 'shop')).toBe(notes)
      expect(await stagingDatabases()).toBe('0')
    }

    // The globals too: no role is created with a wrong key.
    const globals = await cli(['restore', '--globals', globalsId, '--force'], {AGE_IDENTITY_FILE: keys.stranger})
    expect(globals.code).toBe(2)
    const drill = await cli(['drill', dumpId, '--json'], {AGE_IDENTITY_FILE: keys.stranger})
    expect(drill.code).toBe(2)
    expect(await cluster.psql(`SELECT count(*) FROM pg_database WHERE datname LIKE '%drill%'`)).toBe('0')
  })

  it('restore --globals and a drill decrypt with the identity', async () => {
    await cluster.psql(`CREATE ROLE enc_role NOLOGIN`)
    const run = await cli(['backup', 'run', '--json', '--no-prune'], {...encrypted(), BACKUP_GLOBALS: 'true'})
    expect(run.code).toBe(0)
    await cluster.psql(`DROP ROLE enc_role`)
    const globals = await cli(['restore', '--globals', '--force', '--json'], {AGE_IDENTITY_FILE: keys.identity})
    expect(globals.code).toBe(0)
    expect(JSON.parse(globals.stdout).created).toContain('enc_role')

    const drill = await cli(['drill', 'latest', '--json'], {AGE_IDENTITY_FILE: keys.identity})
    expect(drill.code).toBe(0)
    expect(JSON.parse(drill.stdout)).toMatchObject({status: 'passed', checked: 'contents'})
  })

  it('backup download keeps the stored (encrypted) bytes; --decrypt writes the gzip, sha256 verified', async () => {
    const stored = path.join(keys.dir, 'stored.bin')
    const plain = await cli(['backup', 'download', dumpId, '-o', stored, '--json'])
    expect(plain.code).toBe(0)
    expect(await fs.readFile(stored)).toEqual(await fs.readFile(path.join(backupDir, dumpId)))

    const cwd = await tempDir()
    const decrypted = await runCli(['backup', 'download', dumpId, '--decrypt', '--json'], {BACKUP_LOCAL_DIR: backupDir, AGE_IDENTITY_FILE: keys.identity}, {cwd})
    outputs.push(decrypted.stdout, decrypted.stderr)
    expect(decrypted.code).toBe(0)
    const file = path.join(cwd, dumpId.replace(/\.age$/, ''))
    expect(JSON.parse(decrypted.stdout).file).toBe(dumpId.replace(/\.age$/, ''))
    const gzip = await fs.readFile(file)
    expect(gzip.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]))
    const sql = (await exec('bash', ['-c', `gunzip -c ${file}`], {maxBuffer: 64 * 1024 * 1024})).stdout
    expect(sql).toContain(MARKER)

    const wrong = await runCli(['backup', 'download', dumpId, '--decrypt', '-o', path.join(cwd, 'x.gz')], {BACKUP_LOCAL_DIR: backupDir, AGE_IDENTITY_FILE: keys.stranger})
    expect(wrong.code).toBe(2)
    await expect(fs.access(path.join(cwd, 'x.gz'))).rejects.toThrow()
    await fs.rm(cwd, {recursive: true, force: true})
  })

  it('a damaged encrypted dump (a flipped byte, a cut) is refused like a damaged gzip; the target is unchanged', async () => {
    const run = await cli(['backup', 'run', '--json', '--no-prune'], encrypted())
    expect(run.code).toBe(0)
    const {metadata} = JSON.parse(run.stdout)
    const file = path.join(backupDir, metadata.id)
    const original = await fs.readFile(file)
    const before = await fingerprint(cluster, 'shop')
    try {
      const flipped = Buffer.from(original)
      flipped[Math.floor(flipped.length * 0.6)] ^= 0x01
      await fs.writeFile(file, flipped)
      const restore = await cli(['restore', metadata.id, '--force'], {AGE_IDENTITY_FILE: keys.identity})
      expect(restore.code).toBe(1)
      expect(restore.stderr).toMatch(/integrity check failed|damaged/)
      expect(await fingerprint(cluster, 'shop')).toEqual(before)

      await fs.writeFile(file, original.subarray(0, original.length - 100))
      const cut = await cli(['restore', metadata.id, '--force'], {AGE_IDENTITY_FILE: keys.identity})
      expect(cut.code).not.toBe(0)
      expect(cut.stderr).toMatch(/damaged|truncated/)
      expect(await fingerprint(cluster, 'shop')).toEqual(before)
      expect(await stagingDatabases()).toBe('0')
    } finally {
      await fs.writeFile(file, original)
    }
  })

  it('a malformed recipient, and age missing from PATH: exit 2 naming ENCRYPTION_RECIPIENTS, nothing written', async () => {
    const before = await fs.readdir(backupDir)
    const malformed = await cli(['backup', 'run'], {ENCRYPTION_RECIPIENTS: `${keys.recipient},age1notakey`})
    expect(malformed.code).toBe(2)
    expect(malformed.stderr).toMatch(/ENCRYPTION_RECIPIENTS: recipient 2 of 2/)
    const secret = await cli(['backup', 'run'], {ENCRYPTION_RECIPIENTS: keys.secretLines[0]})
    expect([secret.code, secret.stderr]).toEqual([2, expect.stringMatching(/is an age SECRET key/)])
    // The syntax is right but the bech32 checksum is not: age itself refuses it.
    const badChecksum = keys.recipient.slice(0, -1) + (keys.recipient.endsWith('q') ? 'p' : 'q')
    const checksum = await cli(['backup', 'run'], {ENCRYPTION_RECIPIENTS: badChecksum})
    expect([checksum.code, checksum.stderr]).toEqual([2, expect.stringMatching(/ENCRYPTION_RECIPIENTS: age refuses a recipient/)])

    const noAge = await tempDir()
    try {
      for (const tool of ['pg_dump', 'psql', 'gzip']) {
        const {stdout} = await exec('bash', ['-c', `command -v ${tool}`])
        await fs.symlink(stdout.trim(), path.join(noAge, tool))
      }

      const missing = await cli(['backup', 'run'], {...encrypted(), PATH: `${noAge}:${path.dirname(process.execPath)}`})
      expect(missing.code).toBe(2)
      expect(missing.stderr).toMatch(/ENCRYPTION_RECIPIENTS: encryption needs the age program on PATH: install the age program/)
    } finally {
      await fs.rm(noAge, {recursive: true, force: true})
    }

    expect(await fs.readdir(backupDir)).toEqual(before)
  })

  it('SIGKILL mid encrypted backup: nothing listed, age ends, the next backup succeeds; mixed archive restores both kinds', async () => {
    const before = await listIds()
    const release = await holdTableLock(cluster, 'shop', 'events')
    const child = startCli(['backup', 'run', '--no-prune'], {...env, ...encrypted()})
    const done = collect(child)
    let agePids: string[] = []
    try {
      await waitFor(async () => (await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)) === '1')
      const children = (await fs.readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')).trim().split(/\s+/)
      for (const pid of children) {
        const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
        if (argv[0] === 'age') agePids.push(pid)
      }

      expect(agePids.length).toBe(1)
      child.kill('SIGKILL')
      await done
    } finally {
      await release()
    }

    for (const pid of agePids) await waitFor(async () => !(await fs.access(`/proc/${pid}`).then(() => true, () => false)))
    expect(await listIds()).toEqual(before)

    // Mixed: an unencrypted backup next to the encrypted ones; both restore, prune keeps the newest.
    const plainRun = await cli(['backup', 'run', '--json', '--no-prune'])
    expect(plainRun.code).toBe(0)
    const plainId = JSON.parse(plainRun.stdout).metadata.id
    expect(plainId).toMatch(/\.sql\.gz$/)
    const ids = await listIds()
    expect(ids[0]).toBe(plainId)
    expect(ids).toContain(dumpId)
    const expected = await fingerprint(cluster, 'shop')
    for (const id of [plainId, dumpId]) {
      const restore = await cli(['restore', id, '--force'], {AGE_IDENTITY_FILE: keys.identity})
      expect(restore.code).toBe(0)
    }

    await cli(['restore', plainId, '--force'])
    expect(await fingerprint(cluster, 'shop')).toEqual(expected)
    const pruned = await cli(['prune', '--json'], {BACKUPS_TO_RETAIN: '1', RETENTION_DAYS: '0'})
    expect(pruned.code).toBe(0)
    expect((await listIds()).filter((id) => !id.includes('-globals'))).toEqual([plainId])
    agePids = []
  })

  it('no output of any run above holds a line of a private key', () => {
    const all = outputs.join('\n')
    expect(all.length).toBeGreaterThan(1000)
    for (const line of keys.secretLines) expect(all).not.toContain(line)
  })
})

describe('age encryption on S3 (s3rver through the AWS SDK, real PostgreSQL)', () => {
  let cluster: PgCluster
  let s3: S3Server
  let keys: Keys

  beforeAll(async () => {
    cluster = await startPostgres()
    s3 = await startS3Server()
    keys = await makeKeys()
    await seedDatabase(cluster, 'shop', 5_000)
    await cluster.psql(`CREATE TABLE notes (body text); INSERT INTO notes SELECT '${MARKER} ' || g FROM generate_series(1, 50) g`, 'shop')
  }, 60_000)

  afterAll(async () => {
    await cluster?.destroy()
    await s3?.destroy()
    await fs.rm(keys.dir, {recursive: true, force: true})
  })

  it('the stored S3 object is an age file without plaintext; dbb restore and stock age | gunzip | psql restore it', async () => {
    const env = {...cluster.dbbEnv('shop'), ...s3.dbbEnv()}
    const run = await runCli(['backup', 'run', '--json'], {...env, ENCRYPTION_RECIPIENTS: keys.recipient})
    expect(run.code).toBe(0)
    const {metadata} = JSON.parse(run.stdout)
    expect(metadata.id).toMatch(/\.sql\.gz\.age$/)
    const object = await s3.client().send(new GetObjectCommand({Bucket: s3.bucket, Key: `backups/${metadata.id}`}))
    const body = Buffer.from(await object.Body!.transformToByteArray())
    expect(body.subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC)
    expect(body.includes(Buffer.from(MARKER))).toBe(false)
    expect(createHash('sha256').update(body).digest('hex')).toBe(metadata.sha256)

    const expected = await fingerprint(cluster, 'shop')
    await cluster.psql('DELETE FROM customers; DELETE FROM notes', 'shop')
    const restore = await runCli(['restore', 'latest', '--force'], {...env, AGE_IDENTITY_FILE: keys.identity})
    expect(restore.code).toBe(0)
    expect(await fingerprint(cluster, 'shop')).toEqual(expected)

    const wrong = await runCli(['restore', 'latest', '--force'], {...env, AGE_IDENTITY_FILE: keys.stranger})
    expect(wrong.code).toBe(2)

    const downloaded = path.join(keys.dir, 'from-s3.sql.gz.age')
    await fs.writeFile(downloaded, body)
    await cluster.psql('CREATE DATABASE stock_s3')
    const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
    await exec('bash', ['-o', 'pipefail', '-c', `age -d -i ${keys.identity} ${downloaded} | gunzip | psql -X -q -v ON_ERROR_STOP=1 -d stock_s3`], {env: pgEnv, maxBuffer: 64 * 1024 * 1024})
    expect(await fingerprint(cluster, 'stock_s3')).toEqual(expected)
  })
})

/** The seed's fingerprint without `serial`, which reads by calling nextval (and so changes with every look). */
async function fingerprint(cluster: PgCluster, database: string): Promise<Record<string, string>> {
  const {serial: _serial, ...rows} = await fullFingerprint(cluster, database)
  return rows
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
