import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {spawnTool} from '../../src/backup/child-process'
import {streamToStorage} from '../../src/backup/pipeline'
import {runningDeflateJobs} from '../../src/compress/deflate-jobs'
import {DEFAULT_BLOCK_SIZE} from '../../src/compress/parallel-gzip'
import {LocalBackend} from '../../src/plugins/local/src'
import {tempDir} from '../helpers/cli'

const run = promisify(execFile)

/**
 * The compressor inside THE pipeline (streamToStorage), checked with the stock tools a user
 * restores with: gunzip must return the exact bytes the program produced, and sha256sum of the
 * stored file must equal the sha256 the pipeline records.
 */
describe('parallel gzip in the backup pipeline, read by stock gunzip', () => {
  let dir: string
  let storageDir: string
  let storage: LocalBackend

  beforeAll(async () => {
    dir = await tempDir('dbb-pgzip-')
    storageDir = path.join(dir, 'store')
    await fs.mkdir(storageDir)
    storage = new LocalBackend(storageDir)
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  async function storeFile(input: Buffer, key: string, level?: number) {
    const source = path.join(dir, `${key}.in`)
    await fs.writeFile(source, input)
    return streamToStorage({
      start: (signal) => spawnTool('cat', [source], {PATH: process.env.PATH}, signal),
      commandName: 'cat',
      storage,
      key,
      compressionLevel: level,
      compressionThreads: 2,
      inProcessGzip: true,
    })
  }

  it.each([
    ['0 bytes', Buffer.alloc(0)],
    ['1 byte', Buffer.from('\n')],
    ['exactly one block', randomBytes(DEFAULT_BLOCK_SIZE)],
    ['many blocks of SQL text', Buffer.from('INSERT INTO t VALUES (1, $$a row of text$$);\n'.repeat(60_000))],
    ['many blocks of random data', randomBytes(DEFAULT_BLOCK_SIZE * 7 + 999)],
  ])('%s: gunzip returns the exact input, sha256sum matches the recorded hash', async (name, input) => {
    const key = `${name.replaceAll(' ', '-')}.sql.gz`
    const result = await storeFile(input, key, 6)
    const stored = path.join(storageDir, key)

    const {stdout: unzipped} = await run('gunzip', ['-c', stored], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(Buffer.compare(unzipped, input)).toBe(0)
    await run('gzip', ['-t', stored]) // integrity check of the stock tool, trailer included
    const {stdout: sum} = await run('sha256sum', [stored])
    expect(sum.split(' ')[0]).toBe(result.sha256)
    expect(result.sizeBytes).toBe((await fs.stat(stored)).size)
    expect(result.sourceBytes).toBe(input.length)
    // streamToStorage returns only once the compressor closed every zlib job it started.
    expect(runningDeflateJobs()).toBe(0)
  })

  it('zcat reads a dump written at the default level', async () => {
    const input = Buffer.from('COPY t (id, name) FROM stdin;\n'.repeat(20_000))
    await storeFile(input, 'default-level.sql.gz')
    const {stdout} = await run('zcat', [path.join(storageDir, 'default-level.sql.gz')], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(Buffer.compare(stdout, input)).toBe(0)
  })

  it('a program failing half-way stores nothing and leaves no compression job running', async () => {
    const script = `head -c ${DEFAULT_BLOCK_SIZE * 6} /dev/urandom; echo "pg_dump: error: connection lost" >&2; exit 3`
    await expect(
      streamToStorage({
        start: (signal) => spawnTool('sh', ['-c', script], {PATH: process.env.PATH}, signal),
        commandName: 'pg_dump',
        storage,
        key: 'failed.sql.gz',
        compressionThreads: 2,
        inProcessGzip: true,
      }),
    ).rejects.toThrow(/pg_dump failed \(exit code 3\): pg_dump: error: connection lost/)
    expect(await fs.readdir(storageDir)).not.toContainEqual(expect.stringMatching(/^failed/))
    // streamToStorage returns only once the compressor closed every zlib job it started.
    expect(runningDeflateJobs()).toBe(0)
  })

  it('a storage failure stops the program and leaves no compression job running', async () => {
    const failing = new LocalBackend(path.join(dir, 'store'))
    failing.put = async (_key, body) => {
      for await (const _chunk of body) throw new Error('disk full')
      return {sizeBytes: 0}
    }

    await expect(
      streamToStorage({
        start: (signal) => spawnTool('sh', ['-c', 'while true; do head -c 65536 /dev/zero; done'], {PATH: process.env.PATH}, signal),
        commandName: 'producer',
        storage: failing,
        key: 'sink-failed.sql.gz',
        compressionThreads: 2,
        inProcessGzip: true,
      }),
    ).rejects.toThrow('disk full')
    // streamToStorage returns only once the compressor closed every zlib job it started.
    expect(runningDeflateJobs()).toBe(0)
  })
})
