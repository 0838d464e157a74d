import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3'
import {Readable, addAbortSignal} from 'node:stream'

import type {GetOptions, ListOptions, ObjectInfo, ProviderContext, PutOptions, StorageBackend} from '../../../storage/contract'
import {S3ErrorContext, describeS3Error, httpStatus, isNotFoundError, s3ErrorName} from './errors'
import {S3Options} from './settings'
import {multipartPut} from './upload'

/** Connect fast, fail fast: an unreachable endpoint is reported in seconds, not minutes of retries. */
const CONNECTION_TIMEOUT_MS = 5000
/**
 * Time for a server to start answering a request (for an UploadPart: after its body is sent), so a
 * hung server fails the job instead of hanging it. There is deliberately no socket idle timeout:
 * a download's reader may pause for minutes (`download | psql` while psql builds an index).
 */
const RESPONSE_TIMEOUT_MS = 15 * 60_000
const MAX_ATTEMPTS = 3
const HEALTH_TIMEOUT_MS = 20_000

/**
 * Any S3-compatible object store. Keys map to `<S3_PREFIX>/<key>`; uploads stream through
 * lib-storage multipart (see upload.ts), so a reader never sees a partial object under a final key.
 */
export class S3Backend implements StorageBackend {
  readonly name = 's3'
  readonly location: string
  private readonly client: S3Client
  private readonly endpointName: string

  constructor(
    private readonly options: S3Options,
    private readonly logger: ProviderContext['logger'],
  ) {
    this.location = `s3://${options.bucket}${options.prefix ? `/${options.prefix}` : ''}`
    this.endpointName = options.endpoint ?? `AWS S3 (${options.region})`
    this.client = new S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle,
      // Undefined credentials: the SDK's default chain (env, profile, web identity/IRSA, instance role).
      credentials: options.credentials,
      // The SDK's newer default (CRC checksums, aws-chunked bodies) is refused or, worse, stored
      // verbatim by some S3-compatible stores; WHEN_REQUIRED sends what every store understands.
      requestChecksumCalculation: options.checksums,
      responseChecksumValidation: options.checksums,
      maxAttempts: MAX_ATTEMPTS,
      requestHandler: {connectionTimeout: CONNECTION_TIMEOUT_MS, requestTimeout: RESPONSE_TIMEOUT_MS, throwOnRequestTimeout: true},
    })
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{sizeBytes: number}> {
    const objectKey = this.objectKey(key)
    const context = this.context(`upload of ${objectKey}`)
    // Left unread, the body is the caller's to abort: destroying it here could make the caller
    // report a premature close instead of ALREADY_EXISTS.
    if (options.overwrite === false && (await this.stat(key)) !== undefined) throw alreadyExists(key)

    return multipartPut({
      client: this.client,
      options: this.options,
      objectKey,
      key,
      body,
      put: options,
      describe: (error) => describeS3Error(error, context),
      logger: this.logger,
    })
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const objectKey = this.objectKey(key)
    const range = options.start === undefined && options.end === undefined ? undefined : `bytes=${options.start ?? 0}-${options.end ?? ''}`
    try {
      const response = await this.client.send(new GetObjectCommand({Bucket: this.options.bucket, Key: objectKey, Range: range}), {
        abortSignal: options.signal,
      })
      const stream = response.Body as Readable
      return options.signal ? addAbortSignal(options.signal, stream) : stream
    } catch (error) {
      if (isNotFoundError(error)) throw notFound(key)
      // A range starting at the end of the object: nothing to read, as with a file.
      if (httpStatus(error) === 416 || s3ErrorName(error) === 'InvalidRange') return Readable.from([])
      throw describeS3Error(error, this.context(`download of ${objectKey}`))
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const objectKey = this.objectKey(key)
    try {
      const head = await this.client.send(new HeadObjectCommand({Bucket: this.options.bucket, Key: objectKey}))
      return {key, sizeBytes: head.ContentLength ?? 0, lastModified: head.LastModified ?? new Date(0)}
    } catch (error) {
      if (isNotFoundError(error)) return undefined
      throw describeS3Error(error, this.context(`stat of ${objectKey}`))
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const base = this.options.prefix ? `${this.options.prefix}/` : ''
    let continuationToken: string | undefined
    do {
      let page
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.options.bucket,
            Prefix: `${base}${prefix}`,
            // Pages start after this key, so the tail of a 100,000-object prefix is a request or two.
            StartAfter: options.startAfter === undefined ? undefined : `${base}${options.startAfter}`,
            ContinuationToken: continuationToken,
          }),
        )
      } catch (error) {
        throw describeS3Error(error, this.context(`listing of ${this.location}`))
      }

      for (const object of page.Contents ?? []) {
        const key = object.Key?.slice(base.length)
        // Folder placeholders (`dir/`) and odd keys some tools create are not objects of ours.
        if (!key || !object.Key?.startsWith(base) || !isSafeKey(key)) continue
        yield {key, sizeBytes: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0)}
      }

      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (continuationToken)
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key)
    try {
      await this.client.send(new DeleteObjectCommand({Bucket: this.options.bucket, Key: objectKey}))
    } catch (error) {
      if (isNotFoundError(error)) return
      throw describeS3Error(error, this.context(`delete of ${objectKey}`))
    }
  }

  async health(): Promise<void> {
    const context = this.context(`access to bucket "${this.options.bucket}"`)
    const abortSignal = AbortSignal.timeout(HEALTH_TIMEOUT_MS)
    try {
      await this.client.send(new HeadBucketCommand({Bucket: this.options.bucket}), {abortSignal})
    } catch (error) {
      // HEAD responses have no body, so a 403 does not say why; a listing's error body does.
      if (httpStatus(error) === 403 || httpStatus(error) === 400) {
        const detail = await this.client
          .send(new ListObjectsV2Command({Bucket: this.options.bucket, MaxKeys: 1, Prefix: this.options.prefix}), {abortSignal})
          .then(() => undefined)
          .catch((listError: unknown) => listError)
        if (detail) throw describeS3Error(detail, context)
      }

      throw describeS3Error(abortSignal.aborted ? Object.assign(new Error('timed out'), {name: 'TimeoutError'}) : error, context)
    }
  }

  async close(): Promise<void> {
    this.client.destroy()
  }

  private objectKey(key: string): string {
    if (!isSafeKey(key)) throw Object.assign(new Error(`invalid storage key "${key}"`), {code: 'INVALID_KEY'})
    return this.options.prefix ? `${this.options.prefix}/${key}` : key
  }

  private context(action: string): S3ErrorContext {
    return {bucket: this.options.bucket, endpoint: this.endpointName, action}
  }
}

/** Same rule as the local backend: relative, `/`-separated, no empty, `.` or `..` segments. */
export function isSafeKey(key: string): boolean {
  if (key.length === 0 || key.length > 1024 || key.includes('\0') || key.includes('\\')) return false
  return key.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..')
}

function notFound(key: string): Error {
  return Object.assign(new Error(`${key} not found`), {code: 'NOT_FOUND'})
}

export function alreadyExists(key: string): Error {
  return Object.assign(new Error(`${key} already exists`), {code: 'ALREADY_EXISTS'})
}
