import {randomBytes} from 'node:crypto'
import {PassThrough, Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {crc32, gunzipSync, gzipSync} from 'node:zlib'

import {runningDeflateJobs} from '../../src/compress/deflate-jobs'
import {InStreamGunzipCheck} from '../../src/compress/gzip-check'
import {ParallelGzip, createParallelGzip} from '../../src/compress/parallel-gzip'

/** Compresses `input` (fed in `chunkSize` pieces) and returns the gzip bytes and the stream. */
async function compress(input: Buffer, options: {level?: number; threads?: number; blockSize?: number; chunkSize?: number} = {}) {
  const gzip = createParallelGzip({level: options.level ?? 6, threads: options.threads ?? 2, blockSize: options.blockSize})
  const chunkSize = options.chunkSize ?? 64 * 1024
  const chunks: Buffer[] = []
  for (let offset = 0; offset < input.length; offset += chunkSize) chunks.push(input.subarray(offset, offset + chunkSize))
  const output: Buffer[] = []
  await pipeline(
    Readable.from(chunks),
    gzip,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        output.push(chunk)
        callback()
      },
    }),
  )
  return {gz: Buffer.concat(output), gzip}
}

/** SQL-like text: compressible, with repeats that reach across block boundaries. */
function sqlText(bytes: number): Buffer {
  const lines: string[] = []
  let size = 0
  for (let id = 1; size < bytes; id++) {
    const line = `INSERT INTO events VALUES (${id}, '${(id * 7919).toString(36)}', ${id % 97}.5, '2026-01-01T00:00:${id % 60}Z');\n`
    lines.push(line)
    size += line.length
  }

  return Buffer.from(lines.join('')).subarray(0, bytes)
}

describe('parallel gzip', () => {
  const blockSize = 16 * 1024

  it.each([
    ['0 bytes', Buffer.alloc(0)],
    ['1 byte', Buffer.from('x')],
    ['exactly one block', sqlText(blockSize)],
    ['one block plus one byte', sqlText(blockSize + 1)],
    ['many blocks of text', sqlText(blockSize * 37 + 123)],
    ['many blocks of random data', randomBytes(blockSize * 9 + 5)],
  ])('round-trips %s through one standard gzip member', async (_name, input) => {
    const {gz, gzip} = await compress(input, {blockSize, chunkSize: 5000})
    expect(gunzipSync(gz).equals(input)).toBe(true)
    // One member: header magic + deflate, and the trailer is the CRC-32 and size of the whole input.
    expect(gz.subarray(0, 3)).toEqual(Buffer.from([0x1f, 0x8b, 8]))
    expect(gz.readUInt32LE(gz.length - 8)).toBe(crc32(input) >>> 0)
    expect(gz.readUInt32LE(gz.length - 4)).toBe(input.length)
    expect(gzip.runningJobs).toBe(0)
    expect(runningDeflateJobs()).toBe(0)
  })

  it('takes input chunks larger than a block and smaller than one alike', async () => {
    for (const [chunkSize, length] of [
      [1, 20_000],
      [777, 300_000],
      [200_000, 300_000],
    ]) {
      const input = sqlText(length)
      const {gz} = await compress(input, {blockSize: 4096, chunkSize})
      expect(gunzipSync(gz).equals(input)).toBe(true)
    }
  })

  it('keeps the ratio of single-threaded gzip (dictionary across blocks)', async () => {
    const input = sqlText(2 * 1024 * 1024)
    for (const level of [1, 6, 9]) {
      const {gz} = await compress(input, {level, threads: 2})
      const reference = gzipSync(input, {level}).length
      expect(gz.length).toBeLessThan(reference * 1.02)
    }
  })

  it('rejects a level outside 1–9 and a thread count below 1', () => {
    expect(() => createParallelGzip({level: 0})).toThrow(/level must be a whole number from 1 to 9/)
    expect(() => createParallelGzip({level: 10})).toThrow(RangeError)
    expect(() => createParallelGzip({level: 6, threads: 0})).toThrow(/threads must be at least 1/)
  })

  it('stops taking input while its output is not read (bounded memory)', async () => {
    const gzip = new ParallelGzip({level: 1, threads: 2, blockSize, maxBlocksInFlight: 4})
    let produced = 0
    const source = new Readable({
      highWaterMark: blockSize,
      read() {
        const chunk = randomBytes(4096)
        produced += chunk.length
        this.push(chunk)
      },
    })
    source.pipe(gzip) // nobody reads gzip's output
    await new Promise((resolve) => setTimeout(resolve, 500))
    const stalledAt = produced
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(produced).toBe(stalledAt)
    // In flight + staged + the two streams' buffers: a handful of blocks, not the 500 ms of input.
    expect(produced).toBeLessThan(12 * blockSize)
    expect(gzip.blocksInFlight).toBeLessThanOrEqual(4)
    expect(gzip.runningJobs).toBeLessThanOrEqual(2)
    source.destroy()
    await gzip.terminate()
    expect(gzip.runningJobs).toBe(0)
    expect(runningDeflateJobs()).toBe(0)
  })

  it('resumes when the reader catches up and still produces the exact input', async () => {
    const input = randomBytes(blockSize * 20)
    const gzip = createParallelGzip({level: 1, threads: 2, blockSize})
    const slowReader = new PassThrough({highWaterMark: 1})
    const output: Buffer[] = []
    const done = pipeline(Readable.from([input]), gzip, slowReader)
    for await (const chunk of slowReader) {
      output.push(chunk as Buffer)
      await new Promise((resolve) => setImmediate(resolve))
    }

    await done
    expect(gunzipSync(Buffer.concat(output)).equals(input)).toBe(true)
  })

  it('tears down every compression job when the source fails', async () => {
    const gzip = createParallelGzip({level: 6, threads: 2, blockSize})
    async function* failingSource() {
      yield sqlText(blockSize * 5)
      throw new Error('source broke')
    }

    await expect(pipeline(failingSource, gzip, new PassThrough().resume())).rejects.toThrow('source broke')
    await gzip.terminate()
    expect(gzip.destroyed).toBe(true)
    expect(gzip.runningJobs).toBe(0)
    expect(runningDeflateJobs()).toBe(0)
  })

  it('tears down every compression job when the sink fails', async () => {
    const gzip = createParallelGzip({level: 6, threads: 2, blockSize})
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        callback(new Error('disk full'))
      },
    })
    await expect(pipeline(Readable.from([sqlText(blockSize * 8)]), gzip, sink)).rejects.toThrow('disk full')
    await gzip.terminate()
    expect(gzip.runningJobs).toBe(0)
    expect(runningDeflateJobs()).toBe(0)
  })
})

describe('in-stream gzip check', () => {
  async function check(bytes: Buffer): Promise<number> {
    const checker = new InStreamGunzipCheck()
    try {
      for (let offset = 0; offset < bytes.length; offset += 1000) await checker.write(bytes.subarray(offset, offset + 1000))
      return await checker.finish()
    } finally {
      checker.destroy()
    }
  }

  const input = sqlText(200_000)

  it('counts what a whole gzip stream decompresses to', async () => {
    expect(await check(gzipSync(input))).toBe(input.length)
  })

  it('rejects a stream whose trailer CRC does not match its data', async () => {
    const gz = gzipSync(input)
    gz[gz.length - 8] ^= 0xff
    await expect(check(gz)).rejects.toThrow(/in-stream gzip check: incorrect data check/)
  })

  it('rejects a truncated stream', async () => {
    const gz = gzipSync(input)
    await expect(check(gz.subarray(0, gz.length - 20))).rejects.toThrow(/in-stream gzip check/)
  })
})
