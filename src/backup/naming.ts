import {CODECS, CodecName, codecOfKey} from '../compress/codecs'
import {ENCRYPTED_SUFFIX} from '../encrypt/recipients'

/**
 * Backup ids: `<prefix>_<UTC yyyyMMddTHHmmssZ>[-N].(sql|dump|tar).(gz|zst)[.age]`: the kind (BackupKind), then the
 * extension naming the codec (src/compress/codecs.ts) and `.age` marking an object encrypted with age (src/encrypt). The timestamp sorts lexically; `-N`
 * (2, 3, …) separates backups started within the same second. Ids are also storage keys, so the
 * pattern is strict: anything else (`..`, `/`, NUL, absurd lengths) is not an id. The prefix may
 * be longer than BACKUP_NAME_PREFIX allows (64): with DB_NAMES it carries the encoded database
 * name (see databasePrefix); ids stay at most MAX_ID_LENGTH so every temporary name a backend
 * derives from one (`<id>.meta.json.<random>.partial`, …) fits a 255-byte file name.
 */
export const BACKUP_ID_PATTERN = /^([A-Za-z0-9][A-Za-z0-9_-]{0,159})_(\d{8}T\d{6}Z)(?:-(\d{1,4}))?\.(sql|dump|tar)\.(gz|zst)(\.age)?$/
export const MAX_ID_LENGTH = 200
export const SIDECAR_SUFFIX = '.meta.json'
/** The last restore drill's result (src/drill/result.ts); belongs to its backup's id, so it becomes an orphan with it. */
export const DRILL_SUFFIX = '.drill.json'

/** What an id says the object is: a plain SQL dump (`sql`), a pg_dump custom-format archive (`dump`), a base backup (`tar`). */
export type BackupKind = 'sql' | 'dump' | 'tar'

export interface ParsedBackupId {
  prefix: string
  timestamp: string
  sequence: number
  kind: BackupKind
  codec: CodecName
  /** Stored encrypted with age (ENCRYPTION_RECIPIENTS): the id ends in `.age`. */
  encrypted: boolean
}

export function parseBackupId(id: string): ParsedBackupId | undefined {
  const match = BACKUP_ID_PATTERN.exec(id)
  if (!match) return undefined
  return {prefix: match[1], timestamp: match[2], sequence: match[3] ? Number(match[3]) : 1, kind: match[4] as BackupKind, codec: codecOfKey(id) ?? 'gzip', encrypted: match[6] !== undefined}
}

export function isBackupId(id: string): boolean {
  return id.length <= MAX_ID_LENGTH && BACKUP_ID_PATTERN.test(id)
}

export function sidecarKey(id: string): string {
  return `${id}${SIDECAR_SUFFIX}`
}

export function compactUtc(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
}

/** The first id for `now` that `isTaken` says is free. */
export async function newBackupId(
  prefix: string,
  now: Date,
  isTaken: (id: string) => Promise<boolean>,
  kind: BackupKind = 'sql',
  codec: CodecName = 'gzip',
  encrypted = false,
): Promise<string> {
  const stamp = compactUtc(now)
  for (let sequence = 1; sequence < 10_000; sequence++) {
    const id = `${prefix}_${stamp}${sequence === 1 ? '' : `-${sequence}`}.${kind}.${CODECS[codec].extension}${encrypted ? ENCRYPTED_SUFFIX : ''}`
    if (!(await isTaken(id))) return id
  }

  throw new Error(`no free backup id for ${prefix} at ${stamp}`)
}

/**
 * The backup id a storage key belongs to: the dump itself, its sidecar, or an in-progress
 * `<id>.<random>.partial` / `<id>.meta.json.<random>.partial` file. Undefined for keys that are not backup objects (e.g. WAL).
 */
export function backupIdOfKey(key: string): string | undefined {
  if (key.includes('/')) return undefined
  // A partial write of the sidecar (`<id>.meta.json.<random>.partial`, a crash while writing it) belongs to the id too.
  // A local write of a claim is itself `<claim>.<random>.partial` until renamed: strip every such suffix.
  const written = key.replace(/(\.[0-9a-f]+\.partial)+$/, '')
  const candidates = [
    written,
    written.endsWith(SIDECAR_SUFFIX) ? written.slice(0, -SIDECAR_SUFFIX.length) : '',
    written.endsWith(DRILL_SUFFIX) ? written.slice(0, -DRILL_SUFFIX.length) : '',
  ]
  return candidates.find((candidate) => candidate && isBackupId(candidate))
}

// Several databases (DB_NAMES, issue 20): the database is part of the name prefix.

/** Longest prefix an id may have (BACKUP_ID_PATTERN): a database whose encoded name makes it longer cannot be backed up under DB_NAMES. */
export const MAX_PREFIX_LENGTH = 160

/**
 * A database name as it appears in ids: letters and digits as they are, every other byte of its
 * UTF-8 form as `-` and two lowercase hex digits (`my_app` → `my-5fapp`, `café` → `caf-c3-a9`).
 * Reversible (decodeDatabaseName) and injective, and never contains `_`, so the database is always
 * the part of the prefix after its last `_`: `<BACKUP_NAME_PREFIX>_<encoded>_<timestamp>.sql.gz`
 * cannot be confused with another database's ids, nor with ids of another BACKUP_NAME_PREFIX.
 */
export function encodeDatabaseName(name: string): string {
  return [...Buffer.from(name, 'utf8')].map((byte) => (isAlphanumeric(byte) ? String.fromCharCode(byte) : `-${byte.toString(16).padStart(2, '0')}`)).join('')
}

/** The inverse of encodeDatabaseName; undefined for text it cannot have produced. */
export function decodeDatabaseName(encoded: string): string | undefined {
  if (!/^(?:[A-Za-z0-9]|-[0-9a-f]{2})+$/.test(encoded)) return undefined
  const bytes: number[] = []
  for (let index = 0; index < encoded.length; ) {
    if (encoded[index] === '-') {
      bytes.push(Number.parseInt(encoded.slice(index + 1, index + 3), 16))
      index += 3
    } else {
      bytes.push(encoded.charCodeAt(index))
      index += 1
    }
  }

  const name = Buffer.from(bytes).toString('utf8')
  return encodeDatabaseName(name) === encoded ? name : undefined
}

/** The name prefix of one database's backups under DB_NAMES: retention and `latest` apply per prefix, so per database. */
export function databasePrefix(namePrefix: string, database: string): string {
  return `${namePrefix}_${encodeDatabaseName(database)}`
}

/**
 * The name prefix of the cluster's globals (pg_dumpall --globals-only): `-globals` is no database
 * encoding (a `-` is always followed by two hex digits there), so no database can take it.
 */
export function globalsPrefix(namePrefix: string): string {
  return `${namePrefix}_-globals`
}

function isAlphanumeric(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
}
