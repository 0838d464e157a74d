import {execFileSync} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync, gzipSync} from 'node:zlib'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {fetchWal, pushWal} from '../../src/wal/archive'
import {pathWithout, tempDir} from '../helpers/cli'

/**
 * gzip WAL, the default, goes through igzip reading and writing the segment's file itself
 * (src/compress/file-programs.ts); without igzip, through Node's zlib. Both against the real igzip
 * and the real local backend, stock gunzip reading what was stored. `igzip` on PATH is a wrapper
 * that logs each run and then runs the real one, so the test knows which path ran; flag files make
 * the wrapper misbehave the ways a program can (die mid-file, stop early and exit 0, fail to write).
 */
describe('gzip WAL through igzip, and through zlib without it', () => {
  const savedPath = process.env.PATH
  let dir: string
  let storeDir: string
  let storage: LocalBackend
  let withWrapper: string
  let withoutIgzip: string
  let log: string
  let segment: Buffer
  let sequence = 0x20

  /** A 1 MiB segment of timeline 1 whose long page header says so (what wal push reads first), half random, half text. */
  function makeSegment(): Buffer {
    const header = Buffer.alloc(40)
    header.writeUInt16LE(0xd110, 0) // xlp_magic (not checked by dbb)
    header.writeUInt16LE(0x0002, 2) // XLP_LONG_HEADER
    header.writeUInt32LE(1, 4) // timeline
    header.writeBigUInt64LE(7_443_412_345_678_901_234n, 24) // system identifier
    header.writeUInt32LE(1024 * 1024, 32) // xlp_seg_size
    header.writeUInt32LE(8192, 36) // xlp_xlog_blcksz
    const text = Buffer.from('INSERT INTO t VALUES (1, \'a row of text\');\n'.repeat(20_000)).subarray(0, 512 * 1024 - 40)
    return Buffer.concat([header, text, randomBytes(512 * 1024)])
  }

  const nextName = () => `0000000100000000000000${(sequence++).toString(16).toUpperCase().padStart(2, '0')}`
  const storedPath = (name: string) => path.join(storeDir, 'wal', `${name}.gz`)
  const runs = async () => (await fs.readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean)
  const leftovers = async (directory: string) => (await fs.readdir(directory)).filter((entry) => entry.startsWith('RECOVERYXLOG'))

  async function writeFile(name: string, content: Buffer): Promise<string> {
    const file = path.join(dir, 'pg_wal', name)
    await fs.writeFile(file, content)
    return file
  }

  beforeAll(async () => {
    dir = await tempDir('dbb-wal-igzip-')
    storeDir = path.join(dir, 'store')
    await fs.mkdir(storeDir)
    await fs.mkdir(path.join(dir, 'pg_wal'))
    await fs.mkdir(path.join(dir, 'out'))
    storage = new LocalBackend(storeDir)
    log = path.join(dir, 'igzip-runs.log')
    segment = makeSegment()
    const realIgzip = execFileSync('sh', ['-c', 'command -v igzip']).toString().trim()
    withoutIgzip = await pathWithout('igzip', path.join(dir, 'path-without-igzip'))
    withWrapper = await pathWithout('igzip', path.join(dir, 'path-with-wrapper'))
    const flag = (name: string) => path.join(dir, name)
    await fs.writeFile(
      path.join(withWrapper, 'igzip'),
      [
        '#!/bin/sh',
        `echo "$*" >> '${log}'`,
        // Compressing: die after 64 KiB of the file, or stop there and exit 0 as if it were all.
        `if [ "$1" = "-c" ] && [ -e '${flag('die-mid-file')}' ]; then head -c 65536 | '${realIgzip}' "$@"; exit 3; fi`,
        `if [ "$1" = "-c" ] && [ -e '${flag('stop-early')}' ]; then head -c 65536 | '${realIgzip}' "$@"; exit 0; fi`,
        // Decoding: its output cannot be written (as on a full disk, whose own test is storage-faults-local).
        `if [ "$1" = "-d" ] && [ -e '${flag('cannot-write')}' ]; then exec '${realIgzip}' "$@" > /dev/full; fi`,
        `exec '${realIgzip}' "$@"`,
        '',
      ].join('\n'),
      {mode: 0o755},
    )
  })

  afterEach(async () => {
    process.env.PATH = savedPath
    for (const name of ['die-mid-file', 'stop-early', 'cannot-write']) await fs.rm(path.join(dir, name), {force: true})
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('igzip reads the file and writes the fetched one; stock gunzip reads what was stored; zlib reads and writes the same archive', async () => {
    process.env.PATH = withWrapper
    const viaIgzip = nextName()
    const pushed = await pushWal(storage, await writeFile(viaIgzip, segment))
    expect(pushed).toMatchObject({key: `wal/${viaIgzip}.gz`, outcome: 'stored', sha256: createHash('sha256').update(segment).digest('hex')})
    const stored = await fs.readFile(storedPath(viaIgzip))
    expect(stored[8]).toBe(0) // gzip's XFL byte: igzip writes 00, zlib's level 1 writes 04
    expect(gunzipSync(stored).equals(segment)).toBe(true)
    expect(await runs()).toContain('-c -1 -n')

    await fetchWal(storage, viaIgzip, path.join(dir, 'out', 'RECOVERYXLOG'))
    expect((await fs.readFile(path.join(dir, 'out', 'RECOVERYXLOG'))).equals(segment)).toBe(true)
    expect(await runs()).toContain('-d -c')

    // Without igzip: Node's zlib, and each path reads the other's objects (an archive holds both).
    process.env.PATH = withoutIgzip
    const viaZlib = nextName()
    await pushWal(storage, await writeFile(viaZlib, segment))
    expect((await fs.readFile(storedPath(viaZlib)))[8]).toBe(4)
    await fetchWal(storage, viaIgzip, path.join(dir, 'out', 'from-igzip'))
    expect((await fs.readFile(path.join(dir, 'out', 'from-igzip'))).equals(segment)).toBe(true)
    process.env.PATH = withWrapper
    await fetchWal(storage, viaZlib, path.join(dir, 'out', 'from-zlib'))
    expect((await fs.readFile(path.join(dir, 'out', 'from-zlib'))).equals(segment)).toBe(true)
  })

  const damages: Array<[string, (good: Buffer) => Buffer]> = [
    [
      'a flipped byte mid-stream',
      (good) => {
        const bytes = Buffer.from(good)
        bytes[bytes.length >> 1] ^= 0x40
        return bytes
      },
    ],
    [
      'a wrong CRC-32 in the trailer',
      (good) => {
        const bytes = Buffer.from(good)
        bytes[bytes.length - 6] ^= 0x01
        return bytes
      },
    ],
    ['a cut before the trailer', (good) => good.subarray(0, good.length - 20)],
    ['an empty object', () => Buffer.alloc(0)],
    ['bytes that are not gzip', () => Buffer.from('this is not gzip at all')],
  ]

  it.each(['igzip', 'zlib'].flatMap((decoder) => damages.map(([what, damage]) => [decoder, what, damage] as const)))(
    '%s refuses %s as damaged, and nothing is left where PostgreSQL looks',
    async (decoder, _what, damage) => {
      const name = nextName()
      await fs.mkdir(path.join(storeDir, 'wal'), {recursive: true})
      await fs.writeFile(storedPath(name), damage(gzipSync(segment, {level: 1})))
      process.env.PATH = decoder === 'igzip' ? withWrapper : withoutIgzip
      const out = await fs.mkdtemp(path.join(dir, 'out-'))
      await expect(fetchWal(storage, name, path.join(out, 'RECOVERYXLOG'))).rejects.toThrow(/the archived copy is damaged/)
      expect(await leftovers(out)).toEqual([])
    },
  )

  it('igzip dying mid-file fails the push, and nothing is stored', async () => {
    process.env.PATH = withWrapper
    await pushWal(storage, await writeFile(nextName(), segment)) // probed and used
    await fs.writeFile(path.join(dir, 'die-mid-file'), '')
    const name = nextName()
    await expect(pushWal(storage, await writeFile(name, segment))).rejects.toThrow(/igzip exit code 3/)
    await expect(fs.stat(storedPath(name))).rejects.toMatchObject({code: 'ENOENT'})
  })

  it('igzip stopping early with exit 0 is caught by the trailer length, for a segment and for any other file', async () => {
    process.env.PATH = withWrapper
    await pushWal(storage, await writeFile(nextName(), segment))
    await fs.writeFile(path.join(dir, 'stop-early'), '')
    const name = nextName()
    await expect(pushWal(storage, await writeFile(name, segment))).rejects.toThrow(`was 65536 bytes when read, not the ${segment.length} of a whole segment`)
    await expect(fs.stat(storedPath(name))).rejects.toMatchObject({code: 'ENOENT'})

    const history = '00000002.history'
    const content = Buffer.from('1\t0/3000000\tno recovery target specified\n'.repeat(4000))
    await expect(pushWal(storage, await writeFile(history, content))).rejects.toThrow(`was 65536 bytes when read, not the ${content.length} it had when opened`)
    await expect(fs.stat(path.join(storeDir, 'wal', `${history}.gz`))).rejects.toMatchObject({code: 'ENOENT'})

    // The whole file, once igzip reads all of it.
    await fs.rm(path.join(dir, 'stop-early'))
    await pushWal(storage, await writeFile(name, segment))
    expect(gunzipSync(await fs.readFile(storedPath(name))).equals(segment)).toBe(true)
  })

  it('a decoded file igzip cannot write is a write failure, not a damaged archive, and leaves nothing', async () => {
    process.env.PATH = withWrapper
    const name = nextName()
    await pushWal(storage, await writeFile(name, segment))
    await fs.writeFile(path.join(dir, 'cannot-write'), '')
    const out = await fs.mkdtemp(path.join(dir, 'out-'))
    const failed = fetchWal(storage, name, path.join(out, 'RECOVERYXLOG'))
    await expect(failed).rejects.toThrow(/decoding into .*RECOVERYXLOG failed: igzip exit code 252/)
    await expect(failed).rejects.not.toThrow(/damaged/)
    expect(await leftovers(out)).toEqual([])
  })
})
