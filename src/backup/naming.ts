import {CODECS, CodecName, codecOfKey} from '../compress/codecs'

/**
 * Backup ids: `<prefix>_<UTC yyyyMMddTHHmmssZ>[-N].(sql|tar).(gz|zst)`, the last extension naming the codec
 * (src/compress/codecs.ts). The timestamp sorts lexically; `-N`
 * (2, 3, …) separates backups started within the same second. Ids are also storage keys, so the
 * pattern is strict: anything else (`..`, `/`, NUL, absurd lengths) is not an id.
 */
export const BACKUP_ID_PATTERN = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63})_(\d{8}T\d{6}Z)(?:-(\d{1,4}))?\.(sql|tar)\.(gz|zst)$/
export const SIDECAR_SUFFIX = '.meta.json'

export interface ParsedBackupId {
  prefix: string
  timestamp: string
  sequence: number
  kind: 'sql' | 'tar'
  codec: CodecName
}

export function parseBackupId(id: string): ParsedBackupId | undefined {
  const match = BACKUP_ID_PATTERN.exec(id)
  if (!match) return undefined
  return {prefix: match[1], timestamp: match[2], sequence: match[3] ? Number(match[3]) : 1, kind: match[4] as 'sql' | 'tar', codec: codecOfKey(id) ?? 'gzip'}
}

export function isBackupId(id: string): boolean {
  return id.length <= 128 && BACKUP_ID_PATTERN.test(id)
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
  kind: 'sql' | 'tar' = 'sql',
  codec: CodecName = 'gzip',
): Promise<string> {
  const stamp = compactUtc(now)
  for (let sequence = 1; sequence < 10_000; sequence++) {
    const id = `${prefix}_${stamp}${sequence === 1 ? '' : `-${sequence}`}.${kind}.${CODECS[codec].extension}`
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
  const candidates = [written, written.endsWith(SIDECAR_SUFFIX) ? written.slice(0, -SIDECAR_SUFFIX.length) : '']
  return candidates.find((candidate) => candidate && isBackupId(candidate))
}
