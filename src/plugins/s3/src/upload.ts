import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  type CompletedPart,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  type ServerSideEncryption,
  type StorageClass,
  UploadPartCommand,
} from '@aws-sdk/client-s3'
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
 * Streams `body` to one object: a body that fits in one part becomes a single PutObject; a larger
 * one a multipart upload of `partSize` parts, `concurrency` of them in flight, and the object
 * appears under its key only when CompleteMultipartUpload succeeds.
 *
 * Written here rather than with lib-storage's `Upload`, for memory: lib-storage joins each part
 * from the stream's chunks into a new buffer (`Buffer.concat`), so every part is a fresh 16 MiB
 * allocation, and the dead ones stay mapped until V8 collects them and the allocator returns them.
 * Measured on a backup of 1.09 GB of SQL (260 MB stored): peak RSS 184–210 MB from run to run,
 * growing with the dump's size (143 MB at 108 MB of SQL; issue 15's limit is 200). Here the parts
 * are `concurrency + 1` buffers allocated once and reused (one filling while the others are sent),
 * so memory is (concurrency + 1) × partSize whatever the size: 147–173 MB on the same backup, as
 * fast (BENCHMARKS.md, "Session 21"). What lib-storage did besides is done here too: one
 * PutObject for a body of at most one part, the parts in order in CompleteMultipartUpload with any
 * checksums S3 returned, If-None-Match on the request that makes the object appear.
 *
 * On failure (body error, abort signal, S3 error) nothing more is read or sent; once every part in
 * flight has settled (so the abort cannot race a part still being stored), the multipart upload is
 * aborted. The caller gets the original error; a failed abort (some S3-compatible stores do not
 * implement it) is logged, with a hint to set a lifecycle rule for incomplete multipart uploads.
 */
export async function multipartPut(request: MultipartPutRequest): Promise<{sizeBytes: number}> {
  const {client, options, put} = request
  const {partSize} = options
  const maxParts = request.maxParts ?? MAX_PARTS
  const limit = partSize * maxParts
  const target = {Bucket: options.bucket, Key: request.objectKey}
  const objectParams = {
    ...target,
    ContentType: put.contentType,
    // Not for id claims (0 bytes) and sidecars (a few KB): infrequent-access classes bill each
    // object as at least 128 KB for 30 days, and some stores reject classes on small writes.
    StorageClass: (isSmallBookkeepingKey(request.objectKey) ? undefined : options.storageClass) as StorageClass | undefined,
    ServerSideEncryption: options.sse as ServerSideEncryption | undefined,
    SSEKMSKeyId: options.sseKmsKeyId,
  }
  // Conditional write where the store supports it (AWS S3, MinIO, R2); stores that ignore the
  // header rely on the existence check done before the upload (best effort).
  const ifNoneMatch = put.overwrite === false && options.conditionalWrites ? '*' : undefined

  let sizeBytes = 0
  let sourceError: unknown
  // Counts bytes, and stops a dump that would exceed 10,000 parts before S3 refuses it at the end.
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sizeBytes += chunk.length
      if (sizeBytes > limit) {
        sourceError ??= new Error(
          `the dump exceeds ${formatMiB(limit)}, the most S3 stores in ${maxParts.toLocaleString('en-US')} parts of S3_PART_SIZE=${formatMiB(partSize)}; set a larger S3_PART_SIZE`,
        )
        callback(sourceError as Error)
        return
      }

      callback(null, chunk)
    },
  })

  // The caller's body is piped, not pipelined, into the counter: when the upload stops reading
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

  let uploadId: string | undefined
  let creating: Promise<string> | undefined
  const createUpload = () =>
    (creating ??= client.send(new CreateMultipartUploadCommand(objectParams)).then(({UploadId}) => {
      if (!UploadId) throw new Error('CreateMultipartUpload answered without an UploadId')
      return (uploadId = UploadId)
    }))

  const parts: CompletedPart[] = []
  const inFlight = new Set<Promise<void>>()
  let s3Failure: {error: unknown} | undefined
  // Part buffers not in flight. At most `concurrency` parts are in flight and one more is being
  // filled, so no more than concurrency + 1 buffers are ever allocated.
  const spare: Buffer[] = []
  const takeBuffer = () => spare.pop() ?? Buffer.allocUnsafeSlow(partSize)

  let partNumber = 0
  const sendPart = async (buffer: Buffer, length: number) => {
    while (inFlight.size >= options.concurrency) await Promise.race(inFlight)
    const number = ++partNumber
    const task = (async () => {
      const UploadId = await createUpload()
      const result = await client.send(new UploadPartCommand({...target, UploadId, PartNumber: number, Body: buffer.subarray(0, length), ContentLength: length}))
      if (!result.ETag) throw new Error(`UploadPart answered part ${number} without an ETag`)
      parts.push({
        PartNumber: number,
        ETag: result.ETag,
        ChecksumCRC32: result.ChecksumCRC32,
        ChecksumCRC32C: result.ChecksumCRC32C,
        ChecksumSHA1: result.ChecksumSHA1,
        ChecksumSHA256: result.ChecksumSHA256,
      })
    })()
      .catch((error: unknown) => {
        s3Failure ??= {error}
        // Read no more: the caller learns of the failure now, not at the body's next chunk.
        counter.destroy()
      })
      .finally(() => {
        // Settled: the SDK no longer reads the buffer (its retries are inside send()).
        inFlight.delete(task)
        spare.push(buffer)
      })
    inFlight.add(task)
  }

  try {
    // Until the body outgrows one part its chunks are only kept: most puts are small (id claims,
    // sidecars, WAL segments) and become one PutObject of exactly their bytes, with no part buffer.
    const firstChunks: Buffer[] = []
    let firstLength = 0
    let filling: Buffer | undefined
    let filled = 0
    read: for await (const chunk of counter as AsyncIterable<Buffer>) {
      if (!filling && partNumber === 0) {
        if (firstLength + chunk.length <= partSize) {
          firstChunks.push(chunk)
          firstLength += chunk.length
          continue
        }

        // Outgrown: from here on the body goes through the part buffers.
        filling = takeBuffer()
        filled = 0
        for (const kept of firstChunks.splice(0)) filled += kept.copy(filling, filled)
      }

      for (let offset = 0; offset < chunk.length; ) {
        if (s3Failure) break read
        // A full part is sent once more bytes come: a body of exactly one part is a single PutObject.
        if (filling && filled === partSize) {
          await sendPart(filling, filled)
          filling = undefined
          if (s3Failure) break read
        }

        if (!filling) {
          filling = takeBuffer()
          filled = 0
        }

        const copied = chunk.copy(filling, filled, offset)
        filled += copied
        offset += copied
      }
    }

    if (!s3Failure && sourceError === undefined) {
      if (partNumber === 0) {
        const body = Buffer.concat(firstChunks, firstLength)
        await client.send(new PutObjectCommand({...objectParams, Body: body, ContentLength: body.length, IfNoneMatch: ifNoneMatch}))
      } else {
        if (filling && filled > 0) await sendPart(filling, filled)
        while (inFlight.size > 0) await Promise.all(inFlight)
        if (!s3Failure) {
          parts.sort((a, b) => (a.PartNumber as number) - (b.PartNumber as number))
          await client.send(new CompleteMultipartUploadCommand({...target, UploadId: uploadId, MultipartUpload: {Parts: parts}, IfNoneMatch: ifNoneMatch}))
        }
      }
    }

    while (inFlight.size > 0) await Promise.all(inFlight)
    if (sourceError) throw sourceError
    if (s3Failure) throw s3Failure.error
    return {sizeBytes}
  } catch (caught) {
    counter.destroy()
    // Every part settled before the abort, so no part can be stored after it.
    while (inFlight.size > 0) await Promise.all(inFlight)
    await abortMultipart(request, uploadId)
    if (sourceError) throw sourceError
    // A part's failure, not the premature close of the counter it destroyed.
    const error = s3Failure ? s3Failure.error : caught
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
