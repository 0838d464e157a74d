import {storageConfigError} from '@dbb/storage-contract'
import type {SettingIssue, StorageSetting} from '@dbb/storage-contract'

/**
 * The s3 backend's settings: declared here (core turns them into flags of every storage command)
 * and validated into `S3Options`. Pure, and free of the AWS SDK, so the hook that runs on every
 * command stays cheap. Every problem becomes one issue naming the variable, with an example.
 */

export const MIB = 1024 * 1024
/** S3's limits: parts from 5 MiB to 5 GiB, at most 10,000 parts, objects up to 5 TiB. */
export const MIN_PART_SIZE = 5 * MIB
export const MAX_PART_SIZE = 5 * 1024 * MIB
export const MAX_PARTS = 10_000
/**
 * 16 MiB × 4 in flight keeps the uploader's parts near 84 MB ((4 + 1) × 16 MiB: upload.ts) and
 * allows dumps up to 156 GiB (10,000 parts). One part size serves a whole upload and the dump's
 * size is unknown when it starts, so reaching S3's 5 TiB limit needs S3_PART_SIZE=525MiB (≈ 2.6 GB
 * of memory at 4 in flight): a choice for the operator of such a database, not a default for everyone.
 */
export const DEFAULT_PART_SIZE = 16 * MIB
export const DEFAULT_CONCURRENCY = 4
export const DEFAULT_PREFIX = 'backups'
export const DEFAULT_REGION = 'eu-central-1'
/**
 * Time bounds of every request (see README "Time bounds"). Connect: TCP (and TLS) set-up. Request:
 * the longest silence while dbb waits for the server — for the first byte of an answer (after the
 * request body was sent) and between bytes of a transfer that is under way. Long transfers are not
 * bounded as long as bytes flow; a download whose reader is busy (psql building an index) is not
 * counted as silence.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000

export const S3_SETTINGS: StorageSetting[] = [
  {env: 'S3_BUCKET', flag: 's3-bucket', summary: 'Bucket that holds the backups (storage "s3").', example: 'my-db-backups', required: true},
  {env: 'S3_PREFIX', flag: 's3-prefix', summary: 'Key prefix inside the bucket; "/" for the bucket root.', example: 'prod/app', default: DEFAULT_PREFIX},
  {
    env: 'S3_ENDPOINT',
    flag: 's3-endpoint',
    summary: 'Endpoint of an S3-compatible store (MinIO, Ceph, R2, Hetzner…); unset for AWS S3.',
    example: 'https://minio.internal:9000',
    defaultText: 'AWS S3',
  },
  {
    env: 'S3_FORCE_PATH_STYLE',
    flag: 's3-force-path-style',
    summary: 'Path-style addressing (bucket in the path instead of the host name): true or false.',
    example: 'true',
    defaultText: 'true when S3_ENDPOINT is set, else false',
  },
  {env: 'AWS_DEFAULT_REGION', flag: 'aws-region', summary: 'Region of the bucket.', example: 'eu-central-1', default: DEFAULT_REGION},
  {
    env: 'AWS_ACCESS_KEY_ID',
    flag: 'aws-access-key-id',
    summary: 'Access key; unset: the AWS SDK credential chain (profile, web identity/IRSA, instance role).',
    example: 'AKIAIOSFODNN7EXAMPLE',
  },
  {env: 'AWS_SECRET_ACCESS_KEY', flag: 'aws-secret-access-key', summary: 'Secret key of AWS_ACCESS_KEY_ID.', example: '<secret>', secret: true},
  {env: 'AWS_SESSION_TOKEN', flag: 'aws-session-token', summary: 'Session token, for temporary access keys.', example: '<secret>', secret: true},
  {
    env: 'S3_STORAGE_CLASS',
    flag: 's3-storage-class',
    summary: 'Storage class of dumps, base backups and WAL (e.g. STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR; restores need instant retrieval).',
    example: 'STANDARD_IA',
    defaultText: "the bucket's",
  },
  {env: 'S3_SSE', flag: 's3-sse', summary: 'Server-side encryption: AES256 or aws:kms (aws:kms:dsse).', example: 'aws:kms'},
  {env: 'S3_SSE_KMS_KEY_ID', flag: 's3-sse-kms-key-id', summary: 'KMS key for S3_SSE=aws:kms.', example: 'alias/backups', defaultText: 'the AWS managed key'},
  {
    env: 'S3_PART_SIZE',
    flag: 's3-part-size',
    summary: 'Multipart part size, 5MiB to 5GiB; the largest dump is 10,000 parts.',
    example: '64MiB',
    default: `${DEFAULT_PART_SIZE / MIB}MiB`,
  },
  {env: 'S3_UPLOAD_CONCURRENCY', flag: 's3-upload-concurrency', summary: 'Parts uploaded in parallel, 1 to 64.', example: '4', default: String(DEFAULT_CONCURRENCY)},
  {
    env: 'S3_CONDITIONAL_WRITES',
    flag: 's3-conditional-writes',
    summary: 'Send If-None-Match so a backup never replaces another: true, or false for stores that reject it (NotImplemented).',
    example: 'false',
    default: 'true',
  },
  {
    env: 'S3_CONNECT_TIMEOUT',
    flag: 's3-connect-timeout',
    summary: 'Longest wait to open a connection to the endpoint, e.g. 10s, 500ms, 1m.',
    example: '10s',
    default: `${DEFAULT_CONNECT_TIMEOUT_MS / 1000}s`,
  },
  {
    env: 'S3_REQUEST_TIMEOUT',
    flag: 's3-request-timeout',
    summary: 'Longest silence from the endpoint: for an answer to start, and between bytes of a transfer.',
    example: '30s',
    default: `${DEFAULT_REQUEST_TIMEOUT_MS / 1000}s`,
  },
  {
    env: 'S3_CHECKSUMS',
    flag: 's3-checksums',
    summary: "when_required (works with every S3-compatible store) or when_supported (the SDK's extra CRC checksums).",
    example: 'when_required',
    default: 'when_required',
  },
]

export interface S3Options {
  bucket: string
  /** Without slashes at either end; '' for the bucket root. */
  prefix: string
  endpoint?: string
  forcePathStyle: boolean
  region: string
  /** Undefined: the SDK's default credential chain. */
  credentials?: {accessKeyId: string; secretAccessKey: string; sessionToken?: string}
  storageClass?: string
  sse?: 'AES256' | 'aws:kms' | 'aws:kms:dsse'
  sseKmsKeyId?: string
  partSize: number
  concurrency: number
  checksums: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED'
  /** `If-None-Match: *` on writes that must not replace an object. */
  conditionalWrites: boolean
  connectTimeoutMs: number
  requestTimeoutMs: number
}

const exampleOf = (variable: string) => S3_SETTINGS.find((spec) => spec.env === variable)?.example

/** Validates the settings (keyed by variable, blank ones absent); throws one StorageConfigError (storageConfigError) listing every problem. */
export function parseS3Settings(settings: Readonly<Record<string, string | undefined>>): S3Options {
  const issues: SettingIssue[] = []
  const problem = (variable: string, message: string) => issues.push({variable, message, example: exampleOf(variable)})
  const value = (variable: string) => {
    const text = settings[variable]?.trim()
    return text === undefined || text === '' ? undefined : text
  }

  const bucket = value('S3_BUCKET')
  if (bucket === undefined) problem('S3_BUCKET', 'is required with STORAGE_BACKEND=s3')
  else if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/.test(bucket)) {
    problem('S3_BUCKET', 'must be a bucket name (letters, digits, ".", "-", "_"; no "/")')
  }

  const prefix = (value('S3_PREFIX') ?? DEFAULT_PREFIX).replace(/^\/+|\/+$/g, '')
  if (prefix !== '' && !prefix.split('/').every((segment) => /^[A-Za-z0-9._=+@-]+$/.test(segment) && segment !== '.' && segment !== '..')) {
    problem('S3_PREFIX', 'must be "/"-separated names of letters, digits and . _ - = + @ (no "..", no empty segments)')
  }

  const endpoint = value('S3_ENDPOINT')
  if (endpoint !== undefined) {
    const url = URL.canParse(endpoint) ? new URL(endpoint) : undefined
    if (!url || !['http:', 'https:'].includes(url.protocol)) problem('S3_ENDPOINT', 'must be an http:// or https:// URL')
    // Credentials in the URL would end up in logs and error messages, which name the endpoint.
    else if (url.username || url.password) problem('S3_ENDPOINT', 'must not contain credentials; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
  }

  const forcePathStyle = parseBoolean(value('S3_FORCE_PATH_STYLE'))
  if (forcePathStyle === null) problem('S3_FORCE_PATH_STYLE', 'must be true or false')

  const region = value('AWS_DEFAULT_REGION') ?? DEFAULT_REGION
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/i.test(region)) problem('AWS_DEFAULT_REGION', 'must be a region name')

  const accessKeyId = value('AWS_ACCESS_KEY_ID')
  const secretAccessKey = value('AWS_SECRET_ACCESS_KEY')
  const sessionToken = value('AWS_SESSION_TOKEN')
  if (accessKeyId !== undefined && secretAccessKey === undefined) problem('AWS_SECRET_ACCESS_KEY', 'is required when AWS_ACCESS_KEY_ID is set')
  if (accessKeyId === undefined && secretAccessKey !== undefined) problem('AWS_ACCESS_KEY_ID', 'is required when AWS_SECRET_ACCESS_KEY is set')
  if (accessKeyId === undefined && sessionToken !== undefined) problem('AWS_ACCESS_KEY_ID', 'is required when AWS_SESSION_TOKEN is set')

  const storageClass = value('S3_STORAGE_CLASS')
  if (storageClass !== undefined && !/^[A-Z][A-Z0-9_]*$/.test(storageClass)) {
    problem('S3_STORAGE_CLASS', 'must be a storage class name such as STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR')
  }

  const sse = value('S3_SSE')
  const sseKmsKeyId = value('S3_SSE_KMS_KEY_ID')
  if (sse !== undefined && !['AES256', 'aws:kms', 'aws:kms:dsse'].includes(sse)) problem('S3_SSE', 'must be AES256, aws:kms or aws:kms:dsse')
  if (sseKmsKeyId !== undefined && !sse?.startsWith('aws:kms')) problem('S3_SSE_KMS_KEY_ID', 'needs S3_SSE=aws:kms')

  const partSize = value('S3_PART_SIZE') === undefined ? DEFAULT_PART_SIZE : parseByteSize(value('S3_PART_SIZE') as string)
  if (partSize === undefined) problem('S3_PART_SIZE', 'must be a size such as 16MiB, 64MiB or 1GiB (bytes without a unit)')
  else if (partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) problem('S3_PART_SIZE', 'must be from 5MiB to 5GiB (S3\'s part size limits)')

  const concurrencyText = value('S3_UPLOAD_CONCURRENCY')
  const concurrency = concurrencyText === undefined ? DEFAULT_CONCURRENCY : Number(concurrencyText)
  if (!/^\d+$/.test(concurrencyText ?? '4') || concurrency < 1 || concurrency > 64) problem('S3_UPLOAD_CONCURRENCY', 'must be a whole number from 1 to 64')

  const conditionalWrites = parseBoolean(value('S3_CONDITIONAL_WRITES'))
  if (conditionalWrites === null) problem('S3_CONDITIONAL_WRITES', 'must be true or false')

  const checksums = (value('S3_CHECKSUMS') ?? 'when_required').toLowerCase()
  if (!['when_required', 'when_supported'].includes(checksums)) problem('S3_CHECKSUMS', 'must be when_required or when_supported')

  const connectTimeoutMs = value('S3_CONNECT_TIMEOUT') === undefined ? DEFAULT_CONNECT_TIMEOUT_MS : parseDuration(value('S3_CONNECT_TIMEOUT') as string)
  if (connectTimeoutMs === undefined || connectTimeoutMs < 100 || connectTimeoutMs > 600_000) {
    problem('S3_CONNECT_TIMEOUT', 'must be a duration from 100ms to 10m, such as 10s')
  }

  const requestTimeoutMs = value('S3_REQUEST_TIMEOUT') === undefined ? DEFAULT_REQUEST_TIMEOUT_MS : parseDuration(value('S3_REQUEST_TIMEOUT') as string)
  if (requestTimeoutMs === undefined || requestTimeoutMs < 100 || requestTimeoutMs > 3_600_000) {
    problem('S3_REQUEST_TIMEOUT', 'must be a duration from 100ms to 1h, such as 30s')
  }

  if (issues.length > 0) throw storageConfigError(issues)
  return {
    bucket: bucket as string,
    prefix,
    endpoint: endpoint?.replace(/\/+$/, ''),
    forcePathStyle: forcePathStyle ?? endpoint !== undefined,
    region,
    credentials: accessKeyId ? {accessKeyId, secretAccessKey: secretAccessKey as string, sessionToken} : undefined,
    storageClass,
    sse: sse as S3Options['sse'],
    sseKmsKeyId,
    partSize: partSize as number,
    concurrency,
    checksums: checksums === 'when_supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
    conditionalWrites: conditionalWrites ?? true,
    connectTimeoutMs: connectTimeoutMs as number,
    requestTimeoutMs: requestTimeoutMs as number,
  }
}

/** true/false (also yes/no, 1/0, on/off); undefined when unset; null when unreadable. */
function parseBoolean(text: string | undefined): boolean | undefined | null {
  if (text === undefined) return undefined
  const lower = text.toLowerCase()
  if (['true', 'yes', '1', 'on'].includes(lower)) return true
  if (['false', 'no', '0', 'off'].includes(lower)) return false
  return null
}

const DURATION_UNITS: Record<string, number> = {ms: 1, s: 1000, m: 60_000, h: 3_600_000}

/** `10s`, `500ms`, `2m`, `1h` (a bare number is seconds) → milliseconds; undefined when unreadable. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(text.trim())
  if (!match) return undefined
  return Math.round(Number(match[1]) * DURATION_UNITS[(match[2] ?? 's').toLowerCase()])
}

export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`
}

const UNITS: Record<string, number> = {'': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: MIB, gib: 1024 * MIB, k: 1024, m: MIB, g: 1024 * MIB}

/** `16MiB`, `64 MB`, `1g`, `8388608` → bytes; undefined when unreadable. */
export function parseByteSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const unit = match ? UNITS[match[2].toLowerCase()] : undefined
  if (!match || unit === undefined) return undefined
  return Math.round(Number(match[1]) * unit)
}

export function formatMiB(bytes: number): string {
  return bytes >= 1024 * 1024 * MIB ? `${(bytes / (1024 * 1024 * MIB)).toFixed(1)} TiB` : bytes >= 1024 * MIB ? `${Math.round(bytes / (1024 * MIB))} GiB` : `${Math.round(bytes / MIB)} MiB`
}
