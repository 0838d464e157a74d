import {Readable} from 'node:stream'
import {z} from 'zod'

import {CODEC_NAMES, codecOfKey, isCodecName} from '../compress/codecs'
import {BackupDamagedError, BackupUnreadableError, NotFoundError, UsageError, errorMessage, isNotFound} from '../errors'
import {printableExcerpt} from '../format'
import {VERSION} from '../version'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {contentsRecordSchema} from './contents-record-schema'
import {databaseProfileSchema, dumpPrivilegesSchema} from './database-profile'
import {SIDECAR_SUFFIX, decodeDatabaseName, isBackupId, parseBackupId, sidecarKey} from './naming'
import {WAL_PREFIX} from '../wal/segments'
import {INDEX_MIN_READS, type IndexEntry, matchingEntry, readSidecarIndex, writeSidecarIndex} from './sidecar-index'

/**
 * The sidecar `<id>.meta.json`: written only after the dump is stored and verified, so its
 * presence is what makes a backup exist.
 *
 * Strict only on what dbb relies on to keep, order and verify a backup (id, createdAt, sizeBytes,
 * sha256) and on the fields a restore or WAL pruning reads (LSNs, first WAL segment). Everything
 * else is informational or an open set a newer dbb may extend (a `triggeredBy: "webhook"`, a new
 * `type` or `compression`): any value is accepted, so a sidecar written by a newer dbb sharing the
 * bucket is a readable backup, listed and kept, never garbage that prune deletes. Commands that
 * cannot use an unknown value say so (see `restoreSupport`).
 */
export const backupMetadataSchema = z.looseObject({
  id: z.string(),
  createdAt: z.iso.datetime(),
  sizeBytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  type: z.string().default('logical').catch('unknown'),
  durationMs: z.number().nonnegative().catch(0),
  triggeredBy: z.string().catch('unknown'),
  database: z.string().catch('unknown'),
  pgVersion: z.string().catch('unknown'),
  pgDumpVersion: z.string().optional().catch(undefined),
  format: z.string().catch('unknown'),
  compression: z.string().default('gzip').catch('unknown'),
  uncompressedBytes: z.number().int().nonnegative().optional().catch(undefined),
  dbbVersion: z.string().optional().catch(undefined),
  // Base (physical) backups only: where in the WAL stream they start and stop (see src/backup/base-backup.ts).
  timeline: z.number().int().positive().optional(),
  startLsn: z.string().optional(),
  stopLsn: z.string().optional(),
  /** The oldest WAL segment a restore of this backup needs; WAL pruning keeps it and everything after. */
  firstWalSegment: z.string().optional(),
  walSegmentSize: z.number().int().positive().optional(),
  pgBasebackupVersion: z.string().optional().catch(undefined),
  // Logical backups: the database's own properties and what the dump says about roles (src/backup/database-profile.ts).
  // Unreadable (a newer dbb's shape): treated as not recorded, which restore handles conservatively.
  databaseProfile: databaseProfileSchema.optional().catch(undefined),
  privileges: dumpPrivilegesSchema.optional().catch(undefined),
  // Logical backups: what a restore must contain, taken in pg_dump's snapshot (src/backup/contents-record.ts); read by restore drills.
  contents: contentsRecordSchema.optional().catch(undefined),
})

export type BackupMetadata = z.infer<typeof backupMetadataSchema>

export async function writeSidecar(storage: StorageBackend, metadata: BackupMetadata): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`)])
  await storage.put(sidecarKey(metadata.id), body, {overwrite: false, contentType: 'application/json'})
}

/** The sidecar exists but is not backup metadata (not JSON, a required field missing or wrong, another id). */
export class InvalidSidecarError extends Error {}

export async function readSidecar(storage: StorageBackend, id: string): Promise<BackupMetadata> {
  const stream = await storage.get(sidecarKey(id))
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  let json: unknown
  try {
    json = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch (error) {
    throw new InvalidSidecarError(`sidecar ${sidecarKey(id)} is not JSON (${errorMessage(error)})`)
  }

  const parsed = backupMetadataSchema.safeParse(json)
  if (!parsed.success) {
    const fields = [...new Set(parsed.error.issues.map((issue) => issue.path.join('.') || '(root)'))].join(', ')
    throw new InvalidSidecarError(`sidecar ${sidecarKey(id)} is not valid backup metadata (${fields})`)
  }

  if (parsed.data.id !== id) throw new InvalidSidecarError(`sidecar ${sidecarKey(id)} names another backup (${printableExcerpt(parsed.data.id)})`)
  return parsed.data
}

/**
 * A backup whose sidecar exists but that cannot be used: `unreadable` when storage refused or
 * failed the read (a 500/503, a reset, EIO, permission denied: it may work on a retry), `damaged`
 * when the objects are there but wrong (the sidecar is not valid metadata, the dump is missing,
 * or the dump's stored size differs from the size its sidecar recorded). Never deleted by prune.
 */
export interface DamagedBackup {
  id: string
  status: 'unreadable' | 'damaged'
  /** What is wrong, for the operator: names the object and the cause. */
  cause: string
  /** The sidecar's type when it was readable; otherwise what the id says (`.sql.gz` logical, `.tar.gz` base). */
  type: string
  /** When it started, from the id (to the second) or the sidecar. */
  createdAt: string
  /** The dump's stored size, when the dump exists. */
  storedBytes?: number
}

/** Every backup (an id with a sidecar) in storage: those that can be used and those that cannot. */
export interface BackupListing {
  backups: BackupMetadata[]
  damaged: DamagedBackup[]
  /** Every key the scan listed (its prefix, or the location beside `wal/`): a backup's other objects, e.g. its drill result, are looked up here instead of requested. */
  listedKeys?: ReadonlySet<string>
}

export interface ListOptions {
  /** Only backups with this name prefix. */
  prefix?: string
  type?: 'logical' | 'base' | 'globals'
  /** Sidecars are immutable: a long-running process passes one Map to skip re-reading them. */
  cache?: Map<string, BackupMetadata>
  /** The objects under the prefix, when the caller has just listed them: saves listing again. */
  objects?: Iterable<ObjectInfo>
}

const SIDECAR_READ_CONCURRENCY = 16

/**
 * Every key of the location except archived WAL: backups are never under `wal/`, which can hold
 * 100,000 segments (two key ranges around it; on S3 the WAL pages are never requested). The range
 * after `wal/` (the sidecar index, names after "wal") is listed while the first one pages, not after it.
 */
async function* listBesideWal(storage: StorageBackend): AsyncGenerator<ObjectInfo> {
  // Backends may ignore the range (optional in the contract): each key is taken from one range only.
  const afterWal = collect(storage.list('', {startAfter: AFTER_WAL_KEYS}), (object) => object.key > AFTER_WAL_KEYS)
  // Awaited below; until then a failure of it must not count as unhandled (the first range's failure is reported first).
  afterWal.catch(() => {})
  for await (const object of storage.list('', {endBefore: WAL_PREFIX})) if (object.key < WAL_PREFIX) yield object
  yield* await afterWal
}

async function collect(objects: AsyncIterable<ObjectInfo>, keep: (object: ObjectInfo) => boolean): Promise<ObjectInfo[]> {
  const kept: ObjectInfo[] = []
  for await (const object of objects) if (keep(object)) kept.push(object)
  return kept
}

/** Sorts after every archived WAL key (their characters are hex digits, letters, '.', '-'). */
const AFTER_WAL_KEYS = `${WAL_PREFIX}~`

/**
 * Every backup in storage, newest first (by id: the listing knows that without reading a
 * sidecar). A backup is an id whose sidecar exists: complete when the sidecar reads, is valid,
 * and its dump exists with the recorded size; otherwise damaged or unreadable — a read error is
 * never taken for absence. A dump without a sidecar (in progress, crashed, unverified) is not a
 * backup and is in neither list.
 */
export async function scanBackups(storage: StorageBackend, options: ListOptions = {}): Promise<BackupListing> {
  const listedId = (key: string) => {
    const id = key.endsWith(SIDECAR_SUFFIX) ? key.slice(0, -SIDECAR_SUFFIX.length) : undefined
    return id !== undefined && isBackupId(id) && (!options.prefix || parseBackupId(id)?.prefix === options.prefix) ? id : undefined
  }

  // Many sidecars to read: the location's index may hold them (src/backup/sidecar-index.ts). It is
  // requested as soon as the listing shows that many, so it arrives while the listing pages on
  // (readSidecarIndex never fails: an index it cannot read is an empty one).
  let indexRead: Promise<Map<string, IndexEntry>> | undefined
  let toRead = 0
  const objects = new Map<string, ObjectInfo>()
  for await (const object of options.objects ?? (options.prefix ? storage.list(`${options.prefix}_`) : listBesideWal(storage))) {
    objects.set(object.key, object)
    const id = listedId(object.key)
    if (id !== undefined && !options.cache?.has(id) && ++toRead >= INDEX_MIN_READS) indexRead ??= readSidecarIndex(storage)
  }

  const ids = [...objects.keys()].map(listedId).filter((id) => id !== undefined)
  const useIndex = indexRead !== undefined
  const index = (await indexRead) ?? new Map<string, IndexEntry>()
  let sidecarsRead = 0
  /** Every sidecar that read as metadata, whether or not its dump matches: what the index may hold. */
  const readable: BackupMetadata[] = []
  const listing: BackupListing = {backups: [], damaged: []}
  let next = 0
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++]
      const dump = objects.get(id)
      let metadata = options.cache?.get(id) ?? indexedMetadata(index, objects.get(sidecarKey(id)), id)
      if (!metadata) {
        try {
          metadata = await readSidecar(storage, id)
          sidecarsRead += 1
          options.cache?.set(id, metadata)
        } catch (error) {
          // Deleted between list and read: a prune in another process removed the whole backup.
          if (isNotFound(error)) continue
          listing.damaged.push(sidecarFailure(id, error, dump))
          continue
        }
      }

      readable.push(metadata)
      const problem = dumpProblem(metadata, dump)
      if (problem) listing.damaged.push({id, status: 'damaged', cause: problem, type: metadata.type, createdAt: metadata.createdAt, storedBytes: dump?.sizeBytes})
      else listing.backups.push(metadata)
    }
  }

  await Promise.all(Array.from({length: Math.min(SIDECAR_READ_CONCURRENCY, ids.length)}, worker))
  if (useIndex) await refreshIndex(storage, index, readable, objects, options.prefix, sidecarsRead)
  const wanted = (entry: {type: string}) => !options.type || entry.type === options.type
  return {backups: listing.backups.filter(wanted).sort(newestFirst), damaged: listing.damaged.filter(wanted).sort(newestFirst), listedKeys: new Set(objects.keys())}
}

/** The metadata the index holds for the listed sidecar of `id`, validated as a sidecar read from storage is; undefined to read it. */
function indexedMetadata(index: Map<string, IndexEntry>, sidecar: ObjectInfo | undefined, id: string): BackupMetadata | undefined {
  const entry = matchingEntry(index, sidecar)
  const parsed = entry && backupMetadataSchema.safeParse(entry.metadata)
  return parsed?.success && parsed.data.id === id ? parsed.data : undefined
}

/**
 * Rewrites the index when this scan read sidecars or found indexed ones gone: its entries are the
 * sidecars just listed that read as metadata, plus what it held outside this scan's prefix. Best effort: a
 * location this process cannot write to (read-only credentials) still lists, one read per sidecar.
 */
async function refreshIndex(
  storage: StorageBackend,
  index: Map<string, IndexEntry>,
  readable: BackupMetadata[],
  objects: Map<string, ObjectInfo>,
  prefix: string | undefined,
  sidecarsRead: number,
): Promise<void> {
  const inScope = (key: string) => !prefix || key.startsWith(`${prefix}_`)
  const entries = new Map([...index].filter(([key]) => !inScope(key) || matchingEntry(index, objects.get(key))))
  for (const backup of readable) {
    const sidecar = objects.get(sidecarKey(backup.id))
    if (sidecar) entries.set(sidecar.key, {sizeBytes: sidecar.sizeBytes, lastModified: sidecar.lastModified.getTime(), metadata: backup})
  }

  if (sidecarsRead === 0 && entries.size === index.size) return
  await writeSidecarIndex(storage, entries).catch(() => undefined)
}

/** A sidecar that exists but did not read as metadata: unreadable (storage error) or damaged (invalid). */
function sidecarFailure(id: string, error: unknown, dump: ObjectInfo | undefined): DamagedBackup {
  const unreadable = !(error instanceof InvalidSidecarError)
  return {
    id,
    status: unreadable ? 'unreadable' : 'damaged',
    cause: unreadable ? `reading ${sidecarKey(id)} failed: ${errorMessage(error)}` : errorMessage(error),
    // Without the sidecar, the id is all there is: `.tar.*` is a base backup, `.sql.*` logical.
    type: parseBackupId(id)?.kind === 'tar' ? 'base' : 'logical',
    createdAt: createdAtOfId(id),
    storedBytes: dump?.sizeBytes,
  }
}

/** Why a dump does not match its readable sidecar, or undefined when it does. */
function dumpProblem(metadata: BackupMetadata, dump: ObjectInfo | undefined): string | undefined {
  if (!dump) return `its dump ${metadata.id} is missing (the sidecar ${sidecarKey(metadata.id)} remains)`
  // The sidecar says how to decompress; an id naming another codec means one of the two was renamed or replaced.
  const idCodec = codecOfKey(metadata.id)
  if (isCodecName(metadata.compression) && idCodec !== metadata.compression) {
    return `its id says ${idCodec} but its sidecar says the dump is compressed with ${metadata.compression}`
  }

  if (dump.sizeBytes !== metadata.sizeBytes) {
    return `its dump is ${dump.sizeBytes} bytes in storage but was stored as ${metadata.sizeBytes} bytes (truncated or replaced)`
  }

  return undefined
}

/** Complete backups only, newest first; for views where a damaged one cannot change the answer. Use scanBackups to see them. */
export async function listBackups(storage: StorageBackend, options: ListOptions = {}): Promise<BackupMetadata[]> {
  return (await scanBackups(storage, options)).backups
}

/** Newest first by id: its timestamp (to the second), then its sequence number. */
export function newestFirst(a: {id: string}, b: {id: string}): number {
  const [x, y] = [parseBackupId(a.id), parseBackupId(b.id)]
  return (y?.timestamp ?? '').localeCompare(x?.timestamp ?? '') || (y?.sequence ?? 0) - (x?.sequence ?? 0) || b.id.localeCompare(a.id)
}

function createdAtOfId(id: string): string {
  const stamp = parseBackupId(id)?.timestamp ?? ''
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(stamp)
  return match ? `${match[1]}-${match[2]}-${match[3]}T${match[4]}:${match[5]}:${match[6]}.000Z` : ''
}

/** The error a command or route reports for a backup it cannot use: 503-ish when unreadable (retry), damaged otherwise. */
export function damagedBackupError(entry: DamagedBackup, what = `backup ${entry.id}`): BackupUnreadableError | BackupDamagedError {
  const message = `${what} cannot be used: ${entry.cause}`
  return entry.status === 'unreadable' ? new BackupUnreadableError(message) : new BackupDamagedError(message)
}

/**
 * The newest backup in storage, or undefined when there is none. If the newest is damaged or
 * its sidecar cannot be read, this fails naming it: `latest` never silently means an older backup.
 */
export async function newestBackup(storage: StorageBackend, options: ListOptions = {}): Promise<BackupMetadata | undefined> {
  const {backups, damaged} = await scanBackups(storage, options)
  const [newest] = backups
  const [newestDamaged] = damaged
  if (newestDamaged && (!newest || newestFirst(newestDamaged, newest) < 0)) {
    throw damagedBackupError(newestDamaged, `the newest backup (${newestDamaged.id})`)
  }

  return newest
}

/**
 * Why `latest` of a prefix found nothing when the location holds DB_NAMES backups: those carry the
 * database in their prefix (`<prefix>_<database>`), so the plain prefix's `latest` is none of them,
 * and the user has to say which database (--db / ?db=). Empty when there are none.
 */
async function perDatabaseHint(storage: StorageBackend, prefix: string | undefined): Promise<string> {
  if (prefix === undefined) return ''
  const databases = new Set<string>()
  for await (const object of storage.list(`${prefix}_`)) {
    if (!object.key.endsWith(SIDECAR_SUFFIX)) continue
    const idPrefix = parseBackupId(object.key.slice(0, -SIDECAR_SUFFIX.length))?.prefix
    const encoded = idPrefix?.startsWith(`${prefix}_`) ? idPrefix.slice(prefix.length + 1) : undefined
    const database = encoded === undefined ? undefined : decodeDatabaseName(encoded)
    if (database !== undefined) databases.add(database)
  }

  if (databases.size === 0) return ''
  const names = [...databases].sort()
  return ` with the name prefix "${prefix}"; it holds the backups of ${names.length === 1 ? 'one database' : `${names.length} databases`} taken with DB_NAMES (${names.join(', ')}): name one with --db NAME (REST: ?db=NAME)`
}

/** `latest` or an id, to the backup's metadata; a malformed id is a usage error, never a storage lookup. */
export async function resolveBackup(storage: StorageBackend, reference: string, options: ListOptions = {}): Promise<BackupMetadata> {
  if (reference === 'latest') {
    const newest = await newestBackup(storage, options)
    if (!newest) throw new NotFoundError(`no backups found in ${storage.location}${await perDatabaseHint(storage, options.prefix)}`)
    return newest
  }

  if (!isBackupId(reference)) {
    throw new UsageError(`"${printableExcerpt(reference)}" is not a backup id (expected latest or e.g. backup_20261121T030000Z.sql.gz)`)
  }

  const [sidecar, dump] = await Promise.all([
    readSidecar(storage, reference).then(
      (metadata) => ({metadata}),
      (error: unknown) => ({error}),
    ),
    storage.stat(reference),
  ])
  if ('error' in sidecar) {
    if (isNotFound(sidecar.error)) throw new NotFoundError(`backup ${reference} not found in ${storage.location}`)
    throw damagedBackupError(sidecarFailure(reference, sidecar.error, dump))
  }

  const problem = dumpProblem(sidecar.metadata, dump)
  if (problem) throw damagedBackupError({id: reference, status: 'damaged', cause: problem, type: sidecar.metadata.type, createdAt: sidecar.metadata.createdAt, storedBytes: dump?.sizeBytes})
  return sidecar.metadata
}

const RESTORABLE = {type: ['logical', 'base'], compression: [...CODEC_NAMES] as string[]}

/** Why this dbb cannot restore a backup (written by a newer dbb, of a type or compression it does not know), or undefined. */
export function restoreSupport(backup: BackupMetadata): string | undefined {
  if (!RESTORABLE.type.includes(backup.type) || !RESTORABLE.compression.includes(backup.compression)) {
    const writer = backup.dbbVersion ? `dbb ${backup.dbbVersion}` : 'another dbb'
    return `${backup.id} has type "${backup.type}" and compression "${backup.compression}" (written by ${writer}); this dbb ${VERSION} restores logical and base backups compressed with ${CODEC_NAMES.join(' or ')}: upgrade dbb to restore it`
  }

  return undefined
}
