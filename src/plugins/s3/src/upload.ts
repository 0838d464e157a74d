import {AbortMultipartUploadCommand, S3Client} from '@aws-sdk/client-s3'
import {Upload} from '@aws-sdk/lib-storage'
import {Readable, Transform, finished} from 'node:stream'

import type {ProviderContext, PutOptions} from '@dbb/storage-contract'
import {isPreconditionFailed, networkErrorCode, s3ErrorName} from './errors'
import {MAX_PARTS, S3Options, formatMiB} from './settings'

export interface MultipartPutRequest {
  client: S3Client
  options: S3Options
  objectKey: string
  /** The key as the caller named it, for error messages. */
  key: string
  body: Readable
  put: PutOptions
  /** Describes an S3 failure; `bytesRead` is how much of the body had been taken when it happened. */
  describe: (error: unknown, bytesRead: number) => Error
  logger: ProviderContext['logger']
  /** S3's limit of parts per upload; lower only in tests, to reach it with little data. */
  maxParts?: number
}

/**
 * Streams `body` to one object through lib-storage: parts of `partSize`, `concurrency` in flight,
 * so memory stays near (concurrency + 1) × partSize whatever the size. A body smaller than one
 * part becomes a single PutObject; otherwise the object appears under its key only when
 * CompleteMultipartUpload succeeds.
 *
 * On failure (body error, abort signal, S3 error) the multipart upload is aborted by us, not by
 * lib-storage: its own abort replaces the original error with the abort's when AbortMultipartUpload
 * itself fails (some S3-compatible stores do not implement it). The caller gets the original error;
 * a failed abort is logged, with a hint to set a lifecycle rule for incomplete multipart uploads.
 */
export async function multipartPut(request: MultipartPutRequest): Promise<{sizeBytes: number}> {
  const {options, put} = request
  const maxParts = request.maxParts ?? MAX_PARTS
  const limit = options.partSize * maxParts
  let sizeBytes = 0
  let sourceError: unknown
  // Counts bytes, and stops a dump that would exceed 10,000 parts before S3 refuses it at the end.
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sizeBytes += chunk.length
      if (sizeBytes > limit) {
        sourceError ??= new Error(
          `the dump exceeds ${formatMiB(limit)}, the most S3 stores in ${maxParts.toLocaleString('en-US')} parts of S3_PART_SIZE=${formatMiB(options.partSize)}; set a larger S3_PART_SIZE`,
        )
        callback(sourceError as Error)
        return
      }

      callback(null, chunk)
    },
  })

  // The caller's body is piped, not pipelined, into the counter: when lib-storage stops reading
  // after an S3 failure it destroys the counter, and that must not destroy the caller's stream
  // (the caller would report the resulting premature close instead of the S3 error). Failures
  // of the body itself, and the abort signal, do stop the upload, and are what put() reports.
  const stopFeeding = (error: unknown) => {
    sourceError ??= error
    counter.destroy(error as Error)
  }

  const onAbort = () => stopFeeding(abortError(put.signal as AbortSignal))
  const stopWatchingBody = finished(request.body, (error) => {
    if (error) stopFeeding(error)
  })
  put.signal?.addEventListener('abort', onAbort, {once: true})
  if (put.signal?.aborted) onAbort()
  request.body.pipe(counter)

  const upload = new Upload({
    client: request.client,
    partSize: options.partSize,
    queueSize: options.concurrency,
    leavePartsOnError: true,
    params: {
      Bucket: options.bucket,
      Key: request.objectKey,
      Body: counter,
      ContentType: put.contentType,
      // Not for id claims (0 bytes) and sidecars (a few KB): infrequent-access classes bill each
      // object as at least 128 KB for 30 days, and some stores reject classes on small writes.
      StorageClass: (isSmallBookkeepingKey(request.objectKey) ? undefined : options.storageClass) as never,
      ServerSideEncryption: options.sse,
      SSEKMSKeyId: options.sseKmsKeyId,
      // Conditional write where the store supports it (AWS S3, MinIO, R2); stores that ignore the
      // header rely on the existence check done before the upload (best effort).
      IfNoneMatch: put.overwrite === false && options.conditionalWrites ? '*' : undefined,
    },
  })

  try {
    // done() settles only after every in-flight part request has settled, so the abort below
    // cannot race a part that is still being uploaded.
    await upload.done()
    if (sourceError) throw sourceError
    return {sizeBytes}
  } catch (error) {
    counter.destroy()
    await abortMultipart(request, upload.uploadId)
    if (sourceError) throw sourceError
    if (put.overwrite === false && isPreconditionFailed(error)) {
      throw Object.assign(new Error(`${request.key} already exists`), {code: 'ALREADY_EXISTS'})
    }

    throw s3ErrorName(error) === 'AbortError' && put.signal?.aborted ? abortError(put.signal) : request.describe(error, sizeBytes)
  } finally {
    put.signal?.removeEventListener('abort', onAbort)
    stopWatchingBody()
  }
}

/** dbb's own bookkeeping objects: id claims (`….partial`) and sidecars (`….meta.json`). */
export function isSmallBookkeepingKey(objectKey: string): boolean {
  return objectKey.endsWith('.partial') || objectKey.endsWith('.meta.json')
}

async function abortMultipart(request: MultipartPutRequest, uploadId: string | undefined): Promise<void> {
  if (!uploadId) return
  try {
    await request.client.send(new AbortMultipartUploadCommand({Bucket: request.options.bucket, Key: request.objectKey, UploadId: uploadId}))
    request.logger.debug({event: 's3.multipart_aborted', key: request.objectKey}, 'aborted the multipart upload')
  } catch (abortFailure) {
    request.logger.warn(
      {event: 's3.multipart_abort_failed', key: request.objectKey, uploadId, error: networkErrorCode(abortFailure) ?? s3ErrorName(abortFailure)},
      'could not abort the multipart upload; its parts stay billed until a lifecycle rule (AbortIncompleteMultipartUpload) removes them',
    )
  }
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason
  if (reason instanceof Error && reason.name !== 'AbortError') return reason
  return Object.assign(new Error('upload aborted'), {name: 'AbortError', code: 'ABORT_ERR'})
}
