import {AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, PutObjectCommand, S3Client, UploadPartCommand} from '@aws-sdk/client-s3'
import {createHash, randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import {parseS3Settings} from '../../src/plugins/s3/src/settings'
import {multipartPut} from '../../src/plugins/s3/src/upload'

const MIB = 1024 * 1024
const quietLogger = {debug() {}, info() {}, warn() {}}

/**
 * A stand-in S3 client that records what multipartPut sends and holds each UploadPart for a while,
 * as a slow link would. It checks what memory stays flat by: no more than S3_UPLOAD_CONCURRENCY
 * parts in flight, no more than concurrency + 1 part buffers ever, and a part's bytes never
 * changed while its request runs (a buffer reused too early would corrupt the object). The real
 * stores (s3rver, Ceph RGW) are in the S3 suites; this is the part no server can show.
 */
class RecordingClient {
  readonly parts = new Map<number, Buffer>()
  readonly buffers = new Set<ArrayBufferLike>()
  readonly commands: string[] = []
  inFlight = 0
  maxInFlight = 0
  put?: Buffer
  /** The memory behind the PutObject body: a small put must not have taken a part buffer. */
  putMemory?: number
  failPart?: number

  async send(command: unknown): Promise<object> {
    this.commands.push((command as object).constructor.name)
    if (command instanceof CreateMultipartUploadCommand) return {UploadId: 'upload-1'}
    if (command instanceof PutObjectCommand) {
      this.put = Buffer.from(command.input.Body as Buffer)
      this.putMemory = (command.input.Body as Buffer).buffer.byteLength
      return {}
    }

    if (command instanceof UploadPartCommand) {
      const body = command.input.Body as Buffer
      const atStart = Buffer.from(body)
      this.buffers.add(body.buffer)
      this.inFlight += 1
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
      await new Promise((resolve) => setTimeout(resolve, 5 + (command.input.PartNumber! % 3) * 5))
      this.inFlight -= 1
      if (!body.equals(atStart)) throw new Error(`part ${command.input.PartNumber} was overwritten while it was being sent`)
      if (command.input.PartNumber === this.failPart) throw Object.assign(new Error('We encountered an internal error.'), {name: 'InternalError', $metadata: {httpStatusCode: 500}})
      this.parts.set(command.input.PartNumber!, atStart)
      return {ETag: `"etag-${command.input.PartNumber}"`}
    }

    if (command instanceof CompleteMultipartUploadCommand) {
      const numbers = command.input.MultipartUpload!.Parts!.map((part) => part.PartNumber!)
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b))
      return {}
    }

    if (command instanceof AbortMultipartUploadCommand) return {}
    throw new Error(`unexpected command ${(command as object).constructor.name}`)
  }

  object(): Buffer {
    return Buffer.concat([...this.parts.keys()].sort((a, b) => a - b).map((number) => this.parts.get(number)!))
  }
}

/** `data` as a stream of chunks of `size` bytes, as pg_dump's pipe delivers it. */
const chunked = (data: Buffer, size: number) => Readable.from((function* () {
  for (let offset = 0; offset < data.length; offset += size) yield data.subarray(offset, offset + size)
})(), {objectMode: false})

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

function upload(client: RecordingClient, body: Readable, concurrency: number) {
  const options = parseS3Settings({S3_BUCKET: 'bucket', S3_REGION: 'eu-central-1', S3_PART_SIZE: '5MiB', S3_UPLOAD_CONCURRENCY: String(concurrency)})
  return multipartPut({
    client: client as unknown as S3Client,
    options,
    objectKey: 'backups/backup_20261205T000000Z.sql.gz',
    key: 'backup_20261205T000000Z.sql.gz',
    body,
    put: {},
    describe: (error) => error as Error,
    logger: quietLogger,
  })
}

describe('S3 multipart upload: a fixed set of part buffers (src/plugins/s3/src/upload.ts)', () => {
  it.each([1, 3])('sends 12 parts with at most %i in flight, from at most concurrency + 1 buffers, every byte in place', async (concurrency) => {
    const data = randomBytes(11 * 5 * MIB + 123_457)
    const client = new RecordingClient()
    // 64 KiB chunks do not divide 5 MiB parts evenly with the odd tail: parts are cut inside chunks.
    await expect(upload(client, chunked(data, 65_536 + 7), concurrency)).resolves.toEqual({sizeBytes: data.length})
    expect(client.parts.size).toBe(12)
    expect(sha256(client.object())).toBe(sha256(data))
    expect(client.maxInFlight).toBe(concurrency)
    expect(client.buffers.size).toBeLessThanOrEqual(concurrency + 1)
    expect(client.commands.filter((name) => name === 'CreateMultipartUploadCommand')).toHaveLength(1)
    expect(client.commands.at(-1)).toBe('CompleteMultipartUploadCommand')
  })

  it('chunks larger than a part are cut across parts as well', async () => {
    const data = randomBytes(3 * 5 * MIB + 17)
    const client = new RecordingClient()
    await expect(upload(client, chunked(data, 7 * MIB + 3), 2)).resolves.toEqual({sizeBytes: data.length})
    expect(client.parts.size).toBe(4)
    expect(client.object().equals(data)).toBe(true)
    expect(client.buffers.size).toBeLessThanOrEqual(3)
  })

  it('a body of at most one part, exactly one included, is a single PutObject; an empty body too', async () => {
    for (const size of [0, 1, 5 * MIB]) {
      const data = randomBytes(size)
      const client = new RecordingClient()
      await expect(upload(client, chunked(data, 65_536), 3)).resolves.toEqual({sizeBytes: size})
      expect(client.commands).toEqual(['PutObjectCommand'])
      expect(client.put!.equals(data)).toBe(true)
      // Its chunks joined, not a part buffer: claims, sidecars and WAL segments take what they hold.
      expect(client.putMemory).toBeLessThanOrEqual(Math.max(size, 64 * 1024))
    }

    // One byte more is two parts.
    const client = new RecordingClient()
    const data = randomBytes(5 * MIB + 1)
    await upload(client, chunked(data, 65_536), 3)
    expect(client.object().equals(data)).toBe(true)
    expect(client.parts.size).toBe(2)
  })

  it('a failed part stops reading the body, lets the parts in flight settle, aborts the upload and reports that part’s error', async () => {
    const client = new RecordingClient()
    client.failPart = 3
    let read = 0
    const data = randomBytes(40 * 5 * MIB)
    // Counted as the stream pulls it (a 'data' listener would make it flow on its own).
    const body = Readable.from((function* () {
      for (let offset = 0; offset < data.length; offset += MIB) {
        read += MIB
        yield data.subarray(offset, offset + MIB)
      }
    })(), {objectMode: false})
    await expect(upload(client, body, 2)).rejects.toThrow('We encountered an internal error.')
    // Abort comes last, after every part settled; nowhere near the whole body was read.
    expect(client.commands.at(-1)).toBe('AbortMultipartUploadCommand')
    expect(client.inFlight).toBe(0)
    expect(client.commands).not.toContain('CompleteMultipartUploadCommand')
    expect(read).toBeLessThan(data.length / 4)
  })
})
