import {DEFAULT_COMPRESSION_LEVEL} from './defaults'

/**
 * The codecs a backup or WAL file can be stored with, and what each one's name, suffix and levels
 * are. Kept free of stream code because the config module (loaded by every command) and the
 * naming module read it. The streams are in src/compress/codec-streams.ts.
 */
export const CODEC_NAMES = ['gzip', 'zstd'] as const
export type CodecName = (typeof CODEC_NAMES)[number]

export interface CodecSpec {
  name: CodecName
  /** The storage key's last extension, without the dot: `backup_….sql.gz`, `wal/….zst`. */
  extension: 'gz' | 'zst'
  minLevel: number
  maxLevel: number
  defaultLevel: number
  contentType: string
}

/**
 * zstd's default level 1: on the benchmark data it keeps `dbb backup run` at the pg_dump floor
 * (the zstd program with one worker per core compresses faster than pg_dump writes) and its
 * output is well under two thirds of gzip -6's (BENCHMARKS.md). Levels above 19 need zstd's
 * --ultra and hundreds of MB of memory per worker: not offered.
 */
export const DEFAULT_ZSTD_LEVEL = 1

export const CODECS: Readonly<Record<CodecName, CodecSpec>> = {
  gzip: {name: 'gzip', extension: 'gz', minLevel: 1, maxLevel: 9, defaultLevel: DEFAULT_COMPRESSION_LEVEL, contentType: 'application/gzip'},
  zstd: {name: 'zstd', extension: 'zst', minLevel: 1, maxLevel: 19, defaultLevel: DEFAULT_ZSTD_LEVEL, contentType: 'application/zstd'},
}

export function isCodecName(name: string): name is CodecName {
  return (CODEC_NAMES as readonly string[]).includes(name)
}

/** The codec a storage key's extension names (`.gz` → gzip, `.zst` → zstd; before an encrypted object's `.age`), or undefined. */
export function codecOfKey(key: string): CodecName | undefined {
  const compressed = key.endsWith('.age') ? key.slice(0, -'.age'.length) : key
  return CODEC_NAMES.find((name) => compressed.endsWith(`.${CODECS[name].extension}`))
}

/** The codec a sidecar records (`compression`); callers refused unknown ones first (restoreSupport). */
export function codecOf(backup: {compression: string}): CodecName {
  if (isCodecName(backup.compression)) return backup.compression
  throw new Error(`unknown compression "${backup.compression}"`)
}
