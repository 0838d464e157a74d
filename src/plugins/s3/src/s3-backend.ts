import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3'
import {Readable, Transform, addAbortSignal, pipeline} from 'node:stream'

import {alreadyExists, assertSafeKey, isSafeKey, notFound} from '@dbb/storage-contract'
import type {
  GetOptions,
  ListOptions,
  ObjectInfo,
  ProviderContext,
  PutOptions,
  StagedLeftover,
  StorageBackend,
  SweepOptions,
} from '@dbb/storage-contract'
import {S3ErrorContext, describeS3Error, httpStatus, isNotFoundError, s3ErrorName} from './errors'
import {guardedBody} from './download'
import {S3Options} from './settings'
import {multipartPut} from './upload'

/**
 * Attempts per request (the SDK retries throttling, 5xx, resets and timeouts with backoff). Worst
 * case for one request against a hung endpoint: MAX_ATTEMPTS × (S3_CONNECT_TIMEOUT +
 * S3_REQUEST_TIMEOUT) plus backoff — 2 minutes with the defaults, instead of hanging.
 */
const MAX_ATTEMPTS = 3
/** The SDK's retry backoff between attempts stays under this (exponential from 100 ms, 3 attempts). */
const BACKOFF_ALLOWANCE_MS = 5_000
/** The slowest upload rate the time bound allows for: an upload holds up to concurrency × part size while it sends (upload.ts). */
const MIN_UPLOAD_BYTES_PER_SECOND = 1024 * 1024

/**
 * Any S3-compatible object store. Keys map to `<S3_PREFIX>/<key>`; uploads stream through
 * multipart uploads (see upload.ts), so a reader never sees a partial object under a final key.
 */
export class S3Backend implements StorageBackend {
  readonly name = 's3'
  readonly location: string
  /**
   * The contract's time bound: every attempt of a request fails after S3_CONNECT_TIMEOUT plus
   * S3_REQUEST_TIMEOUT of silence; during an upload, the body waits while the buffered parts
   * (concurrency × part size) are sent, allowed at 1 MiB/s. 3 min 14 s with the defaults.
   */
  readonly timeBoundMs: number
  private readonly client: S3Client
  /**
   * Downloads use a client without the socket idle timeout: a download's reader may pause for
   * minutes (psql building an index), which pauses the socket. The wait for the answer is bounded by
   * requestTimeout (until the response headers), the body by guardedBody (silence while read).
   */
  private readonly downloadClient: S3Client
  private readonly endpointName: string

  constructor(
    private readonly options: S3Options,
    private readonly logger: ProviderContext['logger'],
  ) {
    this.location = `s3://${options.bucket}${options.prefix ? `/${options.prefix}` : ''}`
    this.endpointName = options.endpoint ?? `AWS S3 (${options.region})`
    this.timeBoundMs =
      MAX_ATTEMPTS * (options.connectTimeoutMs + options.requestTimeoutMs) +
      BACKOFF_ALLOWANCE_MS +
      Math.ceil((options.partSize * options.concurrency * 1000) / MIN_UPLOAD_BYTES_PER_SECOND)
    const common = {
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
    }
    // socketTimeout: silence on the socket (no byte sent or received) — covers a server that does not
    // answer, and an upload the server stopped reading. requestTimeout would also bound a slow but
    // flowing part upload, so it is not used for writes.
    this.client = new S3Client({...common, requestHandler: {connectionTimeout: options.connectTimeoutMs, socketTimeout: options.requestTimeoutMs}})
    this.downloadClient = new S3Client({
      ...common,
      requestHandler: {connectionTimeout: options.connectTimeoutMs, requestTimeout: options.requestTimeoutMs, throwOnRequestTimeout: true},
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
      describe: (error, bytesRead) => describeS3Error(error, {...context, bytesTransferred: bytesRead}),
      logger: this.logger,
    })
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const objectKey = this.objectKey(key)
    const range = options.start === undefined && options.end === undefined ? undefined : `bytes=${options.start ?? 0}-${options.end ?? ''}`
    const context = this.context(`download of ${objectKey}`)
    try {
      const response = await this.downloadClient.send(new GetObjectCommand({Bucket: this.options.bucket, Key: objectKey, Range: range}), {
        abortSignal: options.signal,
      })
      let stream = guardedBody(response.Body as Readable, {idleTimeoutMs: this.options.requestTimeoutMs, what: `${context.action} from ${this.endpointName}`})
      if (range) stream = exactRange(stream, options, response.ContentRange)
      return options.signal ? addAbortSignal(options.signal, stream) : stream
    } catch (error) {
      if (isNotFoundError(error)) throw notFound(key)
      // A range starting at the end of the object: nothing to read, as with a file.
      if (httpStatus(error) === 416 || s3ErrorName(error) === 'InvalidRange') return Readable.from([])
      throw describeS3Error(error, context)
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
        // S3 lists in UTF-8 byte order: past endBefore, no later page holds a key of the range.
        if (options.endBefore !== undefined && Buffer.compare(Buffer.from(key), Buffer.from(options.endBefore)) >= 0) return
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

  /**
   * Aborts the incomplete multipart uploads under this backend's prefix that were initiated before
   * `olderThan` (a SIGKILLed dbb leaves its upload behind: invisible to listings, its parts billed
   * until aborted). A younger upload may belong to a running backup and is never touched. Stores
   * that cannot list multipart uploads (NotImplemented, e.g. s3rver) yield nothing: a bucket
   * lifecycle rule (AbortIncompleteMultipartUpload) is then the only cleanup.
   */
  async sweep(olderThan: Date, options: SweepOptions = {}): Promise<StagedLeftover[]> {
    const base = this.options.prefix ? `${this.options.prefix}/` : ''
    const context = this.context(`listing of incomplete multipart uploads in ${this.location}`)
    const swept: StagedLeftover[] = []
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    do {
      let page
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({Bucket: this.options.bucket, Prefix: base, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker}),
        )
      } catch (error) {
        if (isNotImplemented(error)) {
          this.logger.debug({event: 's3.sweep_unsupported', endpoint: this.endpointName}, 'the store cannot list multipart uploads')
          return swept
        }

        throw describeS3Error(error, context)
      }

      for (const upload of page.Uploads ?? []) {
        const key = upload.Key?.slice(base.length)
        if (!upload.Key?.startsWith(base) || !key || !upload.UploadId || !upload.Initiated) continue
        if (upload.Initiated.getTime() >= olderThan.getTime()) continue
        if (options.only && !options.only(key)) continue
        if (!options.dryRun) {
          try {
            await this.client.send(new AbortMultipartUploadCommand({Bucket: this.options.bucket, Key: upload.Key, UploadId: upload.UploadId}))
          } catch (error) {
            // Completed or aborted by someone else since the listing: gone either way.
            if (s3ErrorName(error) !== 'NoSuchUpload') throw describeS3Error(error, this.context(`abort of the multipart upload of ${upload.Key}`))
          }
        }

        swept.push({key, startedAt: upload.Initiated, sizeBytes: 0, kind: 'incomplete multipart upload'})
      }

      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined
    } while (keyMarker)

    return swept
  }

  async health(): Promise<void> {
    const context = this.context(`access to bucket "${this.options.bucket}"`)
    try {
      // Bounded like every request: S3_CONNECT_TIMEOUT and S3_REQUEST_TIMEOUT per attempt.
      await this.client.send(new HeadBucketCommand({Bucket: this.options.bucket}))
    } catch (error) {
      // HEAD responses have no body, so a 403 does not say why; a listing's error body does.
      if (httpStatus(error) === 403 || httpStatus(error) === 400) {
        const detail = await this.client
          .send(new ListObjectsV2Command({Bucket: this.options.bucket, MaxKeys: 1, Prefix: this.options.prefix}))
          .then(() => undefined)
          .catch((listError: unknown) => listError)
        if (detail) throw describeS3Error(detail, context)
      }

      throw describeS3Error(error, context)
    }
  }

  async close(): Promise<void> {
    this.client.destroy()
    this.downloadClient.destroy()
  }

  private objectKey(key: string): string {
    assertSafeKey(key)
    return this.options.prefix ? `${this.options.prefix}/${key}` : key
  }

  private context(action: string): S3ErrorContext {
    return {
      bucket: this.options.bucket,
      endpoint: this.endpointName,
      action,
      connectTimeoutMs: this.options.connectTimeoutMs,
      requestTimeoutMs: this.options.requestTimeoutMs,
      sse: this.options.sse,
      storageClass: this.options.storageClass,
    }
  }
}

/**
 * The bytes asked for, also from a store that answers a range wrongly: one that ignores Range (a
 * 200 with the whole object, no Content-Range) or widens it (s3rver answers `bytes=0-0` with the
 * whole object: it reads an end of 0 as "no end"). Content-Range says what was sent; the surplus is
 * skipped or cut here.
 */
function exactRange(stream: Readable, requested: GetOptions, contentRange: string | undefined): Readable {
  const sent = /^bytes (\d+)-(\d+)\//.exec(contentRange ?? '')
  const sentStart = sent ? Number(sent[1]) : 0
  const sentEnd = sent ? Number(sent[2]) : Number.POSITIVE_INFINITY
  let skip = Math.max(0, (requested.start ?? 0) - sentStart)
  let remaining = requested.end === undefined ? Number.POSITIVE_INFINITY : requested.end - Math.max(requested.start ?? 0, sentStart) + 1
  if (skip === 0 && (requested.end === undefined || sentEnd <= requested.end)) return stream
  const exact = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        let part = chunk
        if (skip > 0) {
          const skipped = Math.min(skip, part.length)
          part = part.subarray(skipped)
          skip -= skipped
        }

        if (part.length > remaining) part = part.subarray(0, remaining)
        remaining -= part.length
        callback(null, part.length > 0 ? part : undefined)
      },
  })
  // pipeline, not pipe: an error of the body (a timeout, a reset) reaches the reader.
  pipeline(stream, exact, () => undefined)
  return exact
}

function isNotImplemented(error: unknown): boolean {
  const name = s3ErrorName(error)
  return name === 'NotImplemented' || name === 'MethodNotAllowed' || httpStatus(error) === 501 || httpStatus(error) === 405
}
