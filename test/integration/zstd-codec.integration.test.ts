import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {createCompressor, createDecompressor, createFileCompressor, isDamagedStreamError} from '../../src/compress/codec-streams'
import {InStreamGunzipCheck} from '../../src/compress/gzip-check'
import {tempDir} from '../helpers/cli'

/** Dump-like input: half repetitive SQL, half random (poorly compressible), in uneven chunks. */
function sample(bytes: number): Buffer[] {
  const chunks: Buffer[] = []
  for (let total = 0; total < bytes; ) {
    const chunk = total % 3 === 0 ? randomBytes(37_000) : Buffer.from(`INSERT INTO t VALUES (${total}, 'row ${total}');\n`.repeat(500))
    chunks.push(chunk)
    total += chunk.length
  }

  return chunks
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function compress(input: Buffer[], level = 1): Promise<Buffer> {
  const output: Buffer[] = []
  await pipeline(Readable.from(input), createCompressor('zstd', {level, threads: 2}), new Writable({write: (chunk, _e, done) => (output.push(chunk), done())}))
  return Buffer.concat(output)
}

/** The zstd program (compressing) and both decoders (Node's built-in where it exists, the program always), on real bytes. */
describe('zstd streams (the zstd program; Node built-in decoder where present)', () => {
  const input = sample(6 * 1024 * 1024)
  const whole = Buffer.concat(input)
  let compressed: Buffer

  beforeAll(async () => {
    compressed = await compress(input)
  })

  it('compresses to one zstd frame with a content checksum that stock zstd -dc reads back byte for byte', () => {
    expect(compressed.subarray(0, 4).toString('hex')).toBe('28b52ffd')
    expect(compressed.length).toBeLessThan(whole.length)
    expect(execFileSync('zstd', ['-dc'], {input: compressed, maxBuffer: 64 * 1024 * 1024}).equals(whole)).toBe(true)
    // Frame header descriptor, bit 2: Content_Checksum_flag (RFC 8878 3.1.1.1.1).
    expect(compressed[4] & 0b100).toBe(0b100)
  })

  const decoders = typeof (require('node:zlib') as {createZstdDecompress?: unknown}).createZstdDecompress === 'function' ? (['program', 'builtin'] as const) : (['program'] as const)

  it.each(decoders)('the %s decoder returns the input exactly', async (zstd) => {
    expect((await collect(Readable.from([compressed]).pipe(createDecompressor('zstd', {zstd})))).equals(whole)).toBe(true)
  })

  const damages: [string, (body: Buffer) => Buffer][] = [
    ['truncated frame', (body) => body.subarray(0, body.length - 5)],
    ['truncated to half', (body) => body.subarray(0, body.length >> 1)],
    ['one flipped byte', (body) => Buffer.from(body).fill(body[body.length >> 1] ^ 0x40, body.length >> 1, (body.length >> 1) + 1)],
    ['gzip bytes', () => require('node:zlib').gzipSync(whole)],
    ['empty', () => Buffer.alloc(0)],
  ]

  // An empty input is a valid "nothing" to Node's decoder; the pipeline's byte count refuses it there.
  const cases = decoders.flatMap((zstd) => damages.filter(([name]) => zstd === 'program' || name !== 'empty').map(([name, damage]) => [zstd, name, damage] as const))
  it.each(cases)('the %s decoder refuses %s with a damaged-stream error (no hang)', async (zstd, _name, damage) => {
    const body = damage(compressed)
    // Fed in small chunks, so the decoder fails while input is still coming.
    const chunks = Array.from({length: Math.ceil(body.length / 65_536)}, (_, index) => body.subarray(index * 65_536, (index + 1) * 65_536))
    const error = await pipeline(Readable.from(chunks), createDecompressor('zstd', {zstd}), new Writable({write: (_c, _e, done) => done()})).then(
      () => undefined,
      (caught: unknown) => caught,
    )
    expect(isDamagedStreamError(error)).toBe(true)
  })

  it('the in-stream check counts what a whole stream decompresses to and refuses a truncated one', async () => {
    const check = new InStreamGunzipCheck('zstd')
    for (let offset = 0; offset < compressed.length; offset += 100_000) await check.write(compressed.subarray(offset, offset + 100_000))
    expect(await check.finish()).toBe(whole.length)

    const truncated = new InStreamGunzipCheck('zstd')
    await truncated.write(compressed.subarray(0, compressed.length - 3)).catch(() => {})
    await expect(truncated.finish()).rejects.toThrow(/in-stream zstd check/)
    truncated.destroy()
  })

  it('a compressor whose program is killed mid-stream fails the pipeline instead of ending it cleanly', async () => {
    const compressor = createCompressor('zstd', {level: 1, threads: 1})
    const child = (compressor as unknown as {child: {pid: number}}).child
    const source = Readable.from(
      (async function* () {
        for (let index = 0; index < 200; index++) {
          if (index === 5) process.kill(child.pid, 'SIGKILL')
          yield randomBytes(64 * 1024)
        }
      })(),
    )
    await expect(pipeline(source, compressor, new Writable({write: (_c, _e, done) => done()}))).rejects.toThrow(/zstd failed while compressing \(zstd killed by SIGKILL/)
  })

  it('without the zstd program on PATH, compressing fails with exit code 2 naming COMPRESSION and what to install', async () => {
    const dir = await tempDir()
    const saved = process.env.PATH
    process.env.PATH = dir
    try {
      const compressor = createCompressor('zstd', {level: 1, threads: 1})
      const error = await pipeline(Readable.from([Buffer.from('x')]), compressor, new Writable({write: (_c, _e, done) => done()})).catch((caught: unknown) => caught)
      expect(error).toMatchObject({exitCode: 2, message: expect.stringMatching(/COMPRESSION: the zstd program is not on PATH \(install it, e\.g\. apt-get install zstd\)/)})
    } finally {
      process.env.PATH = saved
      await fs.rm(dir, {recursive: true, force: true})
    }
  })

  it('terminate() leaves no zstd process behind', async () => {
    const compressor = createCompressor('zstd', {level: 1, threads: 1})
    const pid = (compressor as unknown as {child: {pid: number}}).child.pid
    compressor.write(randomBytes(1024))
    await compressor.terminate()
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/)
  })
})

/** The WAL compressor: one segment per stream, in-process (Node's gzip, Node's zstd where it has one). */
describe('createFileCompressor (WAL segments)', () => {
  const input = sample(6 * 1024 * 1024)
  const whole = Buffer.concat(input)

  async function compressFile(codec: 'gzip' | 'zstd'): Promise<Buffer> {
    const output: Buffer[] = []
    await pipeline(Readable.from(input), createFileCompressor(codec, 1), new Writable({write: (chunk, _e, done) => (output.push(chunk), done())}))
    return Buffer.concat(output)
  }

  it.each([
    ['gzip', 'gzip', '1f8b'],
    ['zstd', 'zstd', '28b52ffd'],
  ] as const)('%s output is read back byte for byte by stock %s -dc', async (codec, program, magic) => {
    const compressed = await compressFile(codec)
    expect(compressed.subarray(0, magic.length / 2).toString('hex')).toBe(magic)
    expect(compressed.length).toBeLessThan(whole.length)
    expect(execFileSync(program, ['-dc'], {input: compressed, maxBuffer: 64 * 1024 * 1024}).equals(whole)).toBe(true)
  })

  it('zstd frames carry the content checksum every decoder verifies, so a flipped byte is refused', async () => {
    const compressed = await compressFile('zstd')
    expect(compressed[4] & 0b100).toBe(0b100)
    const damaged = Buffer.from(compressed)
    damaged[damaged.length >> 1] ^= 0x40
    expect(() => execFileSync('zstd', ['-dc'], {input: damaged, stdio: ['pipe', 'ignore', 'ignore']})).toThrow()
  })

  it.each(['gzip', 'zstd'] as const)('%s: terminate() mid-stream resolves and leaves the stream destroyed', async (codec) => {
    const compressor = createFileCompressor(codec, 1)
    compressor.write(randomBytes(4 * 1024 * 1024))
    await compressor.terminate()
    expect(compressor.destroyed).toBe(true)
  })
})
