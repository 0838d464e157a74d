import {Readable} from 'node:stream'
import {z} from 'zod'

import {NotFoundError, UsageError, isNotFound} from '../errors'
import {printableExcerpt} from '../format'
import type {ObjectInfo, StorageBackend} from '../storage/contract'
import {databaseProfileSchema, dumpPrivilegesSchema} from './database-profile'
import {SIDECAR_SUFFIX, isBackupId, parseBackupId, sidecarKey} from './naming'

/**
 * The sidecar `<id>.meta.json`: written only after the dump is stored and verified, so its
 * presence is what makes a backup exist. Listings read sidecars only.
 */
export const backupMetadataSchema = z.looseObject({
  id: z.string(),
  type: z.enum(['logical', 'base']).default('logical'),
  createdAt: z.iso.datetime(),
  sizeBytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  durationMs: z.number().nonnegative(),
  triggeredBy: z.enum(['cli', 'scheduler', 'api']),
  database: z.string(),
  pgVersion: z.string(),
  pgDumpVersion: z.string().optional(),
  format: z.string(),
  compression: z.string(),
  uncompressedBytes: z.number().int().nonnegative().optional(),
  dbbVersion: z.string().optional(),
  // Base (physical) backups only: where in the WAL stream they start and stop (see src/backup/base-backup.ts).
  timeline: z.number().int().positive().optional(),
  startLsn: z.string().optional(),
  stopLsn: z.string().optional(),
  /** The oldest WAL segment a restore of this backup needs; WAL pruning keeps it and everything after. */
  firstWalSegment: z.string().optional(),
  walSegmentSize: z.number().int().positive().optional(),
  pgBasebackupVersion: z.string().optional(),
  // Logical backups: the database's own properties and what the dump says about roles (src/backup/database-profile.ts).
  databaseProfile: databaseProfileSchema.optional(),
  privileges: dumpPrivilegesSchema.optional(),
})

export type BackupMetadata = z.infer<typeof backupMetadataSchema>

export async function writeSidecar(storage: StorageBackend, metadata: BackupMetadata): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`)])
  await storage.put(sidecarKey(metadata.id), body, {overwrite: false, contentType: 'application/json'})
}

export async function readSidecar(storage: StorageBackend, id: string): Promise<BackupMetadata> {
  const stream = await storage.get(sidecarKey(id))
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  const parsed = backupMetadataSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')))
  if (!parsed.success || parsed.data.id !== id) throw new Error(`sidecar of ${id} is not valid backup metadata`)
  return parsed.data
}

export interface ListOptions {
  /** Only backups with this name prefix. */
  prefix?: string
  type?: 'logical' | 'base'
  /** Sidecars are immutable: a long-running process passes one Map to skip re-reading them. */
  cache?: Map<string, BackupMetadata>
  /** The objects under the prefix, when the caller has just listed them: saves listing again. */
  objects?: Iterable<ObjectInfo>
  onInvalid?: (id: string, error: unknown) => void
}

const SIDECAR_READ_CONCURRENCY = 16

/**
 * Every complete backup in storage, newest first: a sidecar whose dump also exists. A dump without
 * a sidecar (in progress, crashed, unverified) is not a backup and is never listed.
 */
export async function listBackups(storage: StorageBackend, options: ListOptions = {}): Promise<BackupMetadata[]> {
  const keys = new Set<string>()
  const objects = options.objects ?? storage.list(options.prefix ? `${options.prefix}_` : '')
  for await (const object of objects) keys.add(object.key)
  const ids = [...keys]
    .filter((key) => key.endsWith(SIDECAR_SUFFIX))
    .map((key) => key.slice(0, -SIDECAR_SUFFIX.length))
    .filter((id) => isBackupId(id) && keys.has(id) && (!options.prefix || parseBackupId(id)?.prefix === options.prefix))

  const backups: BackupMetadata[] = []
  let next = 0
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++]
      const cached = options.cache?.get(id)
      if (cached) {
        backups.push(cached)
        continue
      }

      try {
        const metadata = await readSidecar(storage, id)
        options.cache?.set(id, metadata)
        backups.push(metadata)
      } catch (error) {
        // Deleted between list and read (prune in another process), or unreadable: not listed.
        if (!isNotFound(error)) options.onInvalid?.(id, error)
      }
    }
  }

  await Promise.all(Array.from({length: Math.min(SIDECAR_READ_CONCURRENCY, ids.length)}, worker))
  return sortNewestFirst(backups.filter((backup) => !options.type || backup.type === options.type))
}

export function sortNewestFirst(backups: BackupMetadata[]): BackupMetadata[] {
  return [...backups].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
}

/** `latest` or an id, to the backup's metadata; a malformed id is a usage error, never a storage lookup. */
export async function resolveBackup(storage: StorageBackend, reference: string, options: ListOptions = {}): Promise<BackupMetadata> {
  if (reference === 'latest') {
    const [newest] = await listBackups(storage, options)
    if (!newest) throw new NotFoundError(`no backups found in ${storage.location}`)
    return newest
  }

  if (!isBackupId(reference)) {
    throw new UsageError(`"${printableExcerpt(reference)}" is not a backup id (expected latest or e.g. backup_20261121T030000Z.sql.gz)`)
  }

  const [metadata, dump] = await Promise.all([
    readSidecar(storage, reference).catch((error: unknown) => {
      if (isNotFound(error)) return undefined
      throw error
    }),
    storage.stat(reference),
  ])
  if (!metadata || !dump) throw new NotFoundError(`backup ${reference} not found in ${storage.location}`)
  return metadata
}
