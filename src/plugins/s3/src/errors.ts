/**
 * AWS SDK errors in words an operator can act on. The SDK reports S3 error codes as `name`
 * (`NoSuchBucket`, `InvalidAccessKeyId`), HTTP statuses in `$metadata`, and network failures as
 * Node system errors (`code: 'ECONNREFUSED'`), sometimes wrapped in an AggregateError. Messages name
 * the bucket and endpoint, never credentials, and carry no stack trace; the SDK error is the `cause`.
 */

import {formatDuration} from './settings'

export interface S3ErrorContext {
  bucket: string
  /** The endpoint as the user knows it: S3_ENDPOINT, or AWS S3 in the region. */
  endpoint: string
  /** What dbb was doing, e.g. `upload of backups/x.sql.gz`. */
  action: string
  /** Bytes of the body sent or received before the failure, when known (for a lost connection). */
  bytesTransferred?: number
  /** Write options some stores reject with a bare 400, to name them when that happens. */
  sse?: string
  storageClass?: string
  /** The time bounds in force, to say which one a timeout hit. */
  connectTimeoutMs?: number
  requestTimeoutMs?: number
}

interface SdkErrorShape {
  name?: string
  code?: string
  message?: string
  errors?: unknown[]
  cause?: unknown
  $metadata?: {httpStatusCode?: number}
  $fault?: string
}

const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed while sending',
  ECONNABORTED: 'connection aborted',
}

/** The system error code of a network failure, looking through AggregateError and causes. */
export function networkErrorCode(error: unknown): string | undefined {
  for (const current of errorChain(error)) {
    if (current.code && NETWORK_CODES[current.code]) return current.code
    if (current.name === 'TimeoutError') return 'ETIMEDOUT'
    // Errors that crossed a realm boundary (e.g. under jest) reach us flattened into a message.
    const inMessage = /\b(E[A-Z_]{4,})\b/.exec(current.message ?? '')?.[1]
    if (inMessage && NETWORK_CODES[inMessage]) return inMessage
    if (/socket hang up/i.test(current.message ?? '')) return 'ECONNRESET'
  }

  return undefined
}

/** The error and everything behind it (AggregateError's `errors`, `cause`), breadth first, each once. */
function* errorChain(error: unknown): Generator<SdkErrorShape & {hostname?: string}> {
  const seen = new Set<unknown>()
  const queue = [error]
  while (queue.length > 0) {
    const current = queue.shift() as (SdkErrorShape & {hostname?: string}) | undefined
    if (!current || typeof current !== 'object' || seen.has(current)) continue
    seen.add(current)
    yield current
    if (Array.isArray(current.errors)) queue.push(...current.errors)
    if (current.cause) queue.push(current.cause)
  }
}

/** The host name a failed DNS lookup was for (Node's getaddrinfo errors carry it). */
function failedHostname(error: unknown): string | undefined {
  for (const current of errorChain(error)) {
    if (typeof current.hostname === 'string') return current.hostname
    const inMessage = /getaddrinfo \S+ (\S+)/.exec(current.message ?? '')?.[1]
    if (inMessage) return inMessage
  }

  return undefined
}

export function s3ErrorName(error: unknown): string | undefined {
  return (error as SdkErrorShape | undefined)?.name
}

export function httpStatus(error: unknown): number | undefined {
  return (error as SdkErrorShape | undefined)?.$metadata?.httpStatusCode
}

export function isNotFoundError(error: unknown): boolean {
  const name = s3ErrorName(error)
  return name === 'NoSuchKey' || name === 'NotFound' || (httpStatus(error) === 404 && name !== 'NoSuchBucket')
}

export function isPreconditionFailed(error: unknown): boolean {
  const name = s3ErrorName(error)
  return name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || httpStatus(error) === 412
}

/** Which time bound an SDK timeout hit: the connection, or silence while waiting for / reading an answer. */
function timeoutKind(error: unknown): 'connect' | 'silence' | undefined {
  for (const current of errorChain(error)) {
    const message = current.message ?? ''
    if (/did not establish a connection|connect ETIMEDOUT/i.test(message)) return 'connect'
    if (/timed out after \d+ ms of inactivity|exceeded the configured \d+ ms requestTimeout/i.test(message)) return 'silence'
  }

  return undefined
}

/** Wraps an SDK error into one clear sentence (the SDK error kept as `cause`). */
export function describeS3Error(error: unknown, context: S3ErrorContext): Error {
  const message = describeCause(error, context)
  const described = new Error(`${context.action} failed: ${message}`, {cause: error})
  const status = httpStatus(error)
  return Object.assign(described, {code: s3ErrorName(error) ?? networkErrorCode(error), ...(status === undefined ? {} : {httpStatus: status})})
}

/**
 * A store that does not offer server-side encryption or a storage class answers a bare 400
 * (`InvalidRequest`, `InvalidArgument`) or 501 to the first write: name the setting that is the
 * likely cause.
 */
function optionHint(name: string, status: number | undefined, context: S3ErrorContext): string {
  const rejected = ['InvalidRequest', 'InvalidArgument', 'NotImplemented', 'InvalidEncryptionAlgorithmError'].includes(name) || status === 400 || status === 501
  const inUse = [
    context.sse === undefined ? undefined : `S3_SSE=${context.sse}`,
    context.storageClass === undefined ? undefined : `S3_STORAGE_CLASS=${context.storageClass}`,
  ].filter(Boolean)
  if (!rejected || inUse.length === 0) return ''
  return `; the store may not support ${inUse.join(' or ')}: unset ${inUse.length > 1 ? 'them' : 'it'} and try again`
}

function describeCause(error: unknown, context: S3ErrorContext): string {
  const {bucket, endpoint, connectTimeoutMs, requestTimeoutMs} = context
  const timeout = timeoutKind(error)
  if (timeout === 'connect' && connectTimeoutMs !== undefined) {
    return `cannot reach the S3 endpoint ${endpoint}: no connection within ${formatDuration(connectTimeoutMs)} (S3_CONNECT_TIMEOUT); check S3_ENDPOINT and the network`
  }

  if (timeout === 'silence' && requestTimeoutMs !== undefined) {
    return `the S3 endpoint ${endpoint} stopped answering: nothing received for ${formatDuration(requestTimeoutMs)} (S3_REQUEST_TIMEOUT, each attempt); the gateway is hung or overloaded`
  }

  const network = networkErrorCode(error)
  if (network === 'ENOTFOUND' || network === 'EAI_AGAIN') {
    // Virtual-hosted style puts the bucket into the host name: say which name failed.
    const host = failedHostname(error)
    if (host && host.startsWith(`${bucket}.`)) {
      return `cannot reach the S3 endpoint ${endpoint}: the host name ${host} (the bucket as a subdomain, virtual-hosted style) was not found (${network}); set S3_FORCE_PATH_STYLE=true, or make ${host} resolve`
    }

    if (host) return `cannot reach the S3 endpoint ${endpoint}: the host name ${host} was not found (${network}); check S3_ENDPOINT and DNS`
  }

  if (network === 'ECONNRESET' || network === 'EPIPE' || network === 'ECONNABORTED') {
    // The connection was there and broke: not a setting to check, and not a user's Ctrl-C.
    const after = context.bytesTransferred === undefined ? '' : ` after ${context.bytesTransferred.toLocaleString('en-US')} bytes`
    return `the connection to storage was lost${after}: the S3 endpoint ${endpoint} closed it (${NETWORK_CODES[network]}, ${network}); check the endpoint's health and the network`
  }

  if (network) return `cannot reach the S3 endpoint ${endpoint}: ${NETWORK_CODES[network]} (${network}); check S3_ENDPOINT and the network`
  const name = s3ErrorName(error) ?? 'Error'
  const status = httpStatus(error)
  switch (name) {
    case 'NoSuchBucket': {
      return `bucket "${bucket}" does not exist at ${endpoint} (create it, or check S3_BUCKET and S3_ENDPOINT)`
    }

    case 'InvalidAccessKeyId': {
      return `the access key is not known to ${endpoint} (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID`
    }

    case 'SignatureDoesNotMatch': {
      return `${endpoint} rejected the request signature (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY`
    }

    case 'ExpiredToken':
    case 'TokenRefreshRequired':
    case 'InvalidToken': {
      return `the session token was rejected (${name}); renew the temporary credentials (AWS_SESSION_TOKEN)`
    }

    case 'AccessDenied':
    case 'Forbidden': {
      return `access denied to bucket "${bucket}" at ${endpoint} (${name}); check the credentials and the bucket policy`
    }

    case 'CredentialsProviderError': {
      return 'no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or provide a profile, web identity (IRSA) or instance role'
    }

    case 'PermanentRedirect':
    case 'AuthorizationHeaderMalformed': {
      return `bucket "${bucket}" is in another region than AWS_DEFAULT_REGION (${name}); set AWS_DEFAULT_REGION to the bucket's region`
    }

    case 'NotImplemented': {
      return `${endpoint} does not implement a request dbb sent (NotImplemented); if the store does not support conditional writes (If-None-Match), set S3_CONDITIONAL_WRITES=false`
    }

    case 'QuotaExceeded': {
      return `the storage quota of bucket "${bucket}" at ${endpoint} is exceeded (QuotaExceeded); free space (dbb prune, a lower BACKUPS_TO_RETAIN) or raise the quota`
    }

    case 'InvalidStorageClass': {
      return `${endpoint} does not offer the storage class in S3_STORAGE_CLASS (InvalidStorageClass); unset it or pick one the store offers`
    }

    case 'NotFound': {
      return `bucket "${bucket}" does not exist at ${endpoint} (create it, or check S3_BUCKET and S3_ENDPOINT)`
    }

    default: {
      // Bodiless answers (HEAD) only have the status; an S3 error code says more when there is one.
      const generic = /^(\d+|Error|UnknownError|Unknown)$/.test(name)
      if (status === 403 && generic) return `access denied to bucket "${bucket}" at ${endpoint} (HTTP 403); check the credentials and the bucket policy`
      if (status === 301 && generic) return `bucket "${bucket}" is in another region than AWS_DEFAULT_REGION (HTTP 301); set AWS_DEFAULT_REGION to the bucket's region`
      const detail = (error as SdkErrorShape | undefined)?.message
      const text = detail && detail !== name && detail !== 'UnknownError' ? `${name}: ${detail}` : name
      return `${text}${status ? ` (HTTP ${status})` : ''} from ${endpoint}${optionHint(name, status, context)}`
    }
  }
}
