import {DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand} from '@aws-sdk/client-s3'
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync, gzipSync} from 'node:zlib'

import {runCli} from './cli'
import type {S3Server} from './s3-server'

/**
 * The invariants the crash-point and storage-fault matrices check after every kill or fault
 * (issue 11), read straight from storage (the directory, or the bucket through the SDK), never
 * taken from dbb's word:
 *  - nothing partial is listed: every backup `dbb backup list --json` shows is stored whole — the
 *    dump's size and sha256 match its sidecar and it passes `gzip -t`;
 *  - no good backup is lost: every backup that must survive is listed with its sha256;
 *  - every sidecar in storage is listed (none is hidden);
 *  - the WAL archive is consistent: every `wal/<name>.gz` decompresses to exactly its source file
 *    (a partial upload under a final name fails this);
 *  - whatever else is in storage is a leftover (a `.partial` write, an id claim, a dump whose
 *    sidecar was never written or already deleted); the caller asserts that the next run, once
 *    the killed process is gone and ORPHAN_GRACE has passed, leaves none.
 */
export interface TestStore {
  readonly label: string
  /** The variables that point dbb at this storage. */
  readonly env: Record<string, string>
  keys(): Promise<string[]>
  read(key: string): Promise<Buffer>
  write(key: string, data: Buffer): Promise<void>
  remove(key: string): Promise<void>
}

export function localStore(dir: string): TestStore {
  return {
    label: 'local',
    env: {STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: dir},
    async keys() {
      const entries = await fs.readdir(dir, {recursive: true, withFileTypes: true})
      return entries
        .filter((entry) => entry.isFile() && !entry.name.startsWith('.dbb-health-'))
        .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'))
        .sort()
    },
    read: (key) => fs.readFile(path.join(dir, key)),
    async write(key, data) {
      await fs.mkdir(path.dirname(path.join(dir, key)), {recursive: true})
      await fs.writeFile(path.join(dir, key), data)
    },
    remove: (key) => fs.rm(path.join(dir, key), {force: true}),
  }
}

export function s3Store(server: S3Server, prefix: string, extraEnv: Record<string, string> = {}): TestStore & {envVia(endpoint: string): Record<string, string>} {
  const client = server.client()
  return {
    label: 's3',
    get env() {
      return server.dbbEnv({S3_PREFIX: prefix, ...extraEnv})
    },
    /** The same storage through another endpoint (the fault-injecting proxy). */
    envVia(endpoint) {
      return server.dbbEnv({S3_PREFIX: prefix, ...extraEnv}, endpoint)
    },
    async keys() {
      const keys: string[] = []
      let token: string | undefined
      do {
        const page = await client.send(new ListObjectsV2Command({Bucket: server.bucket, Prefix: `${prefix}/`, ContinuationToken: token}))
        keys.push(...(page.Contents ?? []).map((object) => object.Key!.slice(prefix.length + 1)))
        token = page.NextContinuationToken
      } while (token)
      return keys.sort()
    },
    async read(key) {
      const response = await client.send(new GetObjectCommand({Bucket: server.bucket, Key: `${prefix}/${key}`}))
      return Buffer.from(await response.Body!.transformToByteArray())
    },
    async write(key, data) {
      await client.send(new PutObjectCommand({Bucket: server.bucket, Key: `${prefix}/${key}`, Body: data}))
    },
    async remove(key) {
      await client.send(new DeleteObjectCommand({Bucket: server.bucket, Key: `${prefix}/${key}`}))
    },
  }
}

export interface ListedBackup {
  id: string
  sha256: string
  sizeBytes: number
  createdAt: string
}

export interface ArchiveModel {
  store: TestStore
  /** id → sha256 of the backups that must survive whatever happens. */
  mustSurvive: Map<string, string>
  /** WAL file name → sha256 of its source file: what `wal/<name>.gz` must decompress to. */
  walSources: Map<string, string>
}

export interface ArchiveState {
  listed: ListedBackup[]
  /** Keys that belong to no listed backup and are no archived WAL file. */
  leftovers: string[]
}

const SIDECAR = '.meta.json'
const WAL_KEY = /^wal\/([0-9A-F]{24}|[0-9A-F]{8}\.history)\.(gz|zst)(\.age)?$/

/**
 * Checks every invariant above; returns what is listed and what is left over. `viaCli: false`
 * skips spawning `dbb backup list` and takes the sidecars in storage as the listing (the same
 * checks on the bytes; used right after a successful next run, to keep the matrix fast).
 */
export async function checkArchive(model: ArchiveModel, context: string, options: {viaCli?: boolean} = {}): Promise<ArchiveState> {
  const keys = await model.store.keys()
  let listed: ListedBackup[]
  if (options.viaCli === false) {
    const sidecars = keys.filter((key) => key.endsWith(SIDECAR))
    listed = await Promise.all(sidecars.map(async (key) => JSON.parse((await model.store.read(key)).toString('utf8')) as ListedBackup))
  } else {
    const list = await runCli(['backup', 'list', '--json'], model.store.env)
    expect([context, 'backup list', list.code, list.code === 0 ? '' : list.stderr]).toEqual([context, 'backup list', 0, ''])
    listed = JSON.parse(list.stdout) as ListedBackup[]
  }
  const problems: string[] = []

  for (const backup of listed) {
    if (!keys.includes(backup.id)) {
      problems.push(`${backup.id} is listed but its dump is missing`)
      continue
    }

    const dump = await model.store.read(backup.id)
    const sha256 = sha(dump)
    if (dump.length !== backup.sizeBytes || sha256 !== backup.sha256) {
      problems.push(`${backup.id} is listed but stored partially: ${dump.length} bytes sha256 ${sha256.slice(0, 12)}, sidecar says ${backup.sizeBytes} bytes ${backup.sha256.slice(0, 12)}`)
    } else if (!compressedIntact(backup.id, decrypted(model.store, backup.id, dump))) {
      problems.push(`${backup.id} is listed but fails ${backup.id.includes('.zst') ? 'zstd' : 'gzip'} -t`)
    }
  }

  const listedIds = new Set(listed.map((backup) => backup.id))
  for (const [id, sha256] of model.mustSurvive) {
    const found = listed.find((backup) => backup.id === id)
    if (!found) problems.push(`${id} existed before and is no longer listed`)
    else if (found.sha256 !== sha256) problems.push(`${id} is listed with sha256 ${found.sha256.slice(0, 12)}, it was ${sha256.slice(0, 12)}`)
  }

  const leftovers: string[] = []
  for (const key of keys) {
    const wal = WAL_KEY.exec(key)
    if (wal) {
      const expected = model.walSources.get(wal[1])
      const actual = await model.store.read(key).then((data) => decompressedSha(key, decrypted(model.store, key, data)), (error: Error) => `unreadable: ${error.message}`)
      if (actual !== expected) problems.push(`${key} does not decompress to its source segment (${actual.slice(0, 24)}, expected ${expected?.slice(0, 12) ?? 'no such source'})`)
      continue
    }

    if (key.endsWith(SIDECAR) && !key.endsWith('.partial')) {
      if (!listedIds.has(key.slice(0, -SIDECAR.length))) problems.push(`sidecar ${key} is in storage but its backup is not listed`)
      continue
    }

    if (!listedIds.has(key)) leftovers.push(key)
  }

  expect([context, problems]).toEqual([context, []])
  return {listed, leftovers}
}

/** After the next run (ORPHAN_GRACE passed): storage holds listed backups and archived WAL, nothing else. */
export async function expectNoLeftovers(model: ArchiveModel, context: string, options: {viaCli?: boolean} = {}): Promise<ArchiveState> {
  const state = await checkArchive(model, context, options)
  expect([context, 'leftovers', state.leftovers]).toEqual([context, 'leftovers', []])
  return state
}

export function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * An encrypted object (`….age`) decrypted with the stock `age` program and the store's
 * AGE_IDENTITY_FILE, as an operator would; anything else as stored. A damaged age file throws, which
 * the callers report as a broken invariant.
 */
function decrypted(store: TestStore, key: string, data: Buffer): Buffer {
  if (!key.endsWith('.age')) return data
  const identity = store.env.AGE_IDENTITY_FILE
  if (!identity) throw new Error(`${key} is encrypted and the test store has no AGE_IDENTITY_FILE`)
  return execFileSync('age', ['-d', '-i', identity], {input: data, maxBuffer: 1024 * 1024 * 1024})
}

function decompressedSha(key: string, data: Buffer): string {
  return sha(key.replace(/\.age$/, '').endsWith('.zst') ? execFileSync('zstd', ['-dc'], {input: data, maxBuffer: 1024 * 1024 * 1024}) : gunzipSync(data))
}

/** `gzip -t`, the check an operator runs by hand. */
export function gzipIntact(data: Buffer): boolean {
  return compressedIntact('.gz', data)
}

/** `gzip -t` or `zstd -t` by the key's extension (of the decrypted bytes, for a `….age` key). */
export function compressedIntact(key: string, data: Buffer): boolean {
  try {
    execFileSync(key.replace(/\.age$/, '').endsWith('.zst') ? 'zstd' : 'gzip', ['-t'], {input: data, stdio: ['pipe', 'ignore', 'ignore']})
    return true
  } catch {
    return false
  }
}

/**
 * Writes a complete, old logical backup (gzip dump + sidecar) straight into storage, so prune has
 * something to expire on every run of the matrix without taking real backups.
 */
export async function writeOldBackup(store: TestStore, createdAt: Date, prefix = 'backup'): Promise<ListedBackup> {
  const stamp = createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
  const id = `${prefix}_${stamp}.sql.gz`
  const sql = `-- old backup ${createdAt.toISOString()}\n${'SELECT 1;\n'.repeat(2000)}`
  const dump = gzipSync(Buffer.from(sql))
  const metadata = {
    id,
    type: 'logical',
    createdAt: createdAt.toISOString(),
    sizeBytes: dump.length,
    sha256: sha(dump),
    uncompressedBytes: Buffer.byteLength(sql),
    durationMs: 10,
    triggeredBy: 'cli',
    database: 'shop',
    pgVersion: '15.18',
    format: 'plain',
    compression: 'gzip',
  }
  await store.write(id, dump)
  await store.write(`${id}${SIDECAR}`, Buffer.from(JSON.stringify(metadata, null, 2)))
  return {id, sha256: metadata.sha256, sizeBytes: dump.length, createdAt: metadata.createdAt}
}

/** A WAL-named file of `bytes` seeded pseudo-random bytes (dbb treats WAL content as opaque). */
export async function writeSourceSegment(dir: string, name: string, bytes: number, seed: number): Promise<{file: string; sha256: string}> {
  const data = Buffer.alloc(bytes)
  let state = seed >>> 0 || 1
  for (let offset = 0; offset + 4 <= bytes; offset += 4) {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    data.writeUInt32LE(state >>> 0, offset)
  }

  const file = path.join(dir, name)
  await fs.writeFile(file, data)
  return {file, sha256: sha(data)}
}

export function segmentName(number: number): string {
  return `00000001${'0'.repeat(8)}${number.toString(16).toUpperCase().padStart(8, '0')}`
}

/**
 * What the storage-fault matrices run for: the default gzip, and zstd with age encryption, where a
 * child program (`age`) sits between dbb and storage in both directions, so its failures must still
 * fail the command cleanly and name the cause. `env` makes a key in `keys` on first use.
 */
export interface Codec {
  label: string
  walSuffix: string
  env(keys: string): Record<string, string>
}
export const CODECS: Codec[] = [
  {label: 'gzip', walSuffix: '.gz', env: () => ({})},
  {
    label: 'zstd, encrypted with age',
    walSuffix: '.zst.age',
    env(keys) {
      const identity = path.join(keys, 'key.txt')
      if (!existsSync(identity)) execFileSync('age-keygen', ['-o', identity], {stdio: 'ignore'})
      const recipient = execFileSync('age-keygen', ['-y', identity], {encoding: 'utf8'}).trim()
      return {COMPRESSION: 'zstd', ENCRYPTION_RECIPIENTS: recipient, AGE_IDENTITY_FILE: identity}
    },
  },
]
