import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {fetchWal, pushWal} from '../../src/wal/archive'
import {pathWithout, tempDir} from '../helpers/cli'

/**
 * A runtime without Node's built-in zstd (before 22.15; dbb supports Node ≥ 24, but runs on older
 * ones) archives and fetches `COMPRESSION=zstd` WAL through the `zstd` program instead. Node's
 * zstd is hidden from the real zlib module for this file, so the program path runs: the stored
 * object is what stock `zstd -dc` reads back, a fetch returns the exact bytes, and a damaged object
 * is refused with nothing written.
 */
describe('zstd WAL without a built-in zstd (the zstd program)', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const zlib = require('node:zlib') as Record<string, unknown>
  const hidden = {createZstdCompress: zlib.createZstdCompress, createZstdDecompress: zlib.createZstdDecompress}
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dbb-wal-zstd-program-')
    delete zlib.createZstdCompress
    delete zlib.createZstdDecompress
  })

  afterAll(async () => {
    Object.assign(zlib, hidden)
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('push stores a frame stock zstd reads; fetch returns the bytes; a damaged frame is refused', async () => {
    expect(zlib.createZstdCompress).toBeUndefined()
    await fs.mkdir(path.join(dir, 'store'))
    const storage = new LocalBackend(path.join(dir, 'store'))
    const name = '00000001000000000000000A'
    const segment = Buffer.concat([randomBytes(1024 * 1024), Buffer.alloc(3 * 1024 * 1024, 7)])
    await fs.writeFile(path.join(dir, name), segment)

    expect(await pushWal(storage, path.join(dir, name), {codec: 'zstd'})).toMatchObject({key: `wal/${name}.zst`, outcome: 'stored'})
    const stored = path.join(dir, 'store', 'wal', `${name}.zst`)
    expect(execFileSync('zstd', ['-dc', stored], {maxBuffer: 64 * 1024 * 1024}).equals(segment)).toBe(true)

    const destination = path.join(dir, 'RECOVERYXLOG')
    await fetchWal(storage, name, destination)
    expect((await fs.readFile(destination)).equals(segment)).toBe(true)
    await fs.rm(destination)

    // It is the program that did it: without zstd on PATH the same push cannot compress.
    const savedPath = process.env.PATH
    process.env.PATH = await pathWithout('zstd', path.join(dir, 'path-without-zstd'))
    try {
      await fs.writeFile(path.join(dir, '00000001000000000000000B'), segment)
      await expect(pushWal(storage, path.join(dir, '00000001000000000000000B'), {codec: 'zstd'})).rejects.toThrow(/the zstd program is not on PATH/)
    } finally {
      process.env.PATH = savedPath
    }

    expect((await fs.readdir(path.join(dir, 'store', 'wal'))).filter((entry) => entry.startsWith('00000001000000000000000B'))).toEqual([])

    const bytes = await fs.readFile(stored)
    bytes[Math.floor(bytes.length / 2)] ^= 0xff
    await fs.writeFile(stored, bytes)
    await expect(fetchWal(storage, name, destination)).rejects.toThrow(/damaged/)
    expect((await fs.readdir(dir)).filter((entry) => entry.startsWith('RECOVERYXLOG'))).toEqual([])
  })
})
