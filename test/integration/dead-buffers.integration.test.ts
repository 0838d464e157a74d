import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {collect, tempDir} from '../helpers/cli'

/**
 * What the collector is for: a stream read on dbb's main thread leaves dead Buffers behind (one
 * 64 KiB Buffer per read of a pipe), and until V8 collects them they stay resident
 * (BENCHMARKS.md, "Session 10": a gzip backup without pigz peaked 25–30 MB higher). Each test runs
 * a child Node with the young generation dbb runs with, so nothing of jest's heap interferes; the
 * effect on a real backup's RSS is measured by `npm run bench`, not here.
 */
describe('deadBufferCollector', () => {
  // The built module (npm test builds first), as the CLI loads it.
  const built = path.join(__dirname, '..', '..', 'dist', 'dead-buffers.js')

  const runChild = async (script: string, env: NodeJS.ProcessEnv = {}): Promise<Record<string, number>> => {
    const child = spawn(process.execPath, ['--max-semi-space-size=1', '-e', `const {deadBufferCollector} = require(${JSON.stringify(built)});\n${script}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {...process.env, ...env},
    })
    const result = await collect(child)
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    return JSON.parse(result.stdout) as Record<string, number>
  }

  const SIZE = 256 * 1024 * 1024
  /** A built module's path as a JavaScript string literal, for the child's script. */
  const builtModule = (...parts: string[]) => JSON.stringify(path.join(__dirname, '..', '..', ...parts))

  /**
   * Runs `measure` through dbb's path, then the plain control, in one fresh directory (`prepare`d
   * first): dbb's path keeps at most 4 MiB of Buffers alive at any sample, under half of what the
   * control piles up over the same 256 MiB.
   */
  async function expectCollectedBelowPlain(
    prepare: ((root: string) => Promise<void>) | undefined,
    measure: (root: string, throughDbb: boolean) => Promise<Record<string, number>>,
  ): Promise<void> {
    const root = await tempDir('dbb-dead-buffers-')
    try {
      await prepare?.(root)
      const collected = await measure(root, true)
      const plain = await measure(root, false)
      expect(collected.total).toBe(SIZE)
      expect(plain.total).toBeGreaterThanOrEqual(SIZE)
      expect(collected.peak).toBeLessThan(4 * 1024 * 1024)
      expect(plain.peak).toBeGreaterThan(2 * collected.peak)
    } finally {
      await fs.rm(root, {recursive: true, force: true})
    }
  }

  /** Reads 256 MB from a real pipe (`head -c`), as the backup pipeline reads pg_dump's stdout; the peak of the Buffers' memory. */
  const peakReadingAPipe = async (withCollector: boolean) => {
    const {peak, total} = await runChild(`
      const collect = ${withCollector} ? deadBufferCollector() : () => {}
      let peak = 0, total = 0
      ;(async () => {
        const child = require('node:child_process').spawn('head', ['-c', String(256 * 1024 * 1024), '/dev/zero'], {stdio: ['ignore', 'pipe', 'inherit']})
        for await (const chunk of child.stdout) {
          total += chunk.length
          collect(chunk.length)
          peak = Math.max(peak, process.memoryUsage().arrayBuffers)
        }
        process.stdout.write(JSON.stringify({peak, total}))
      })()`)
    expect(total).toBe(256 * 1024 * 1024)
    return peak
  }

  it('keeps the dead read buffers of a pipe near the check interval, where without it they pile up', async () => {
    const withCollector = await peakReadingAPipe(true)
    const without = await peakReadingAPipe(false)
    expect(withCollector).toBeLessThan(10 * 1024 * 1024)
    expect(without).toBeGreaterThan(2 * withCollector)
  }, 60_000)

  // The read-back of a stored backup (src/backup/verify.ts) reads at disk speed, much faster than
  // a backup's stream: at 10× the default dump its dead buffers put the peak 4–5 MB higher
  // (BENCHMARKS.md, "Session 22"). The real local backend and the real read-back, with a probe
  // between them that passes each chunk on unchanged; the control reads the same file the same way
  // without the read-back's collector.
  it("keeps the read-back's dead buffers near the check interval, where a plain read of the same object piles them up", async () => {
    const writeObject = async (root: string) => {
      const handle = await fs.open(path.join(root, 'big.sql.gz'), 'w')
      const block = Buffer.alloc(4 * 1024 * 1024, 7)
      for (let written = 0; written < SIZE; written += block.length) await handle.write(block)
      await handle.close()
    }

    await expectCollectedBelowPlain(writeObject, (root, throughDbb) =>
      runChild(
        `
        const {Transform, Writable} = require('node:stream')
        const {pipeline} = require('node:stream/promises')
        const {LocalBackend} = require(${builtModule('src', 'plugins', 'local', 'dist', 'local-backend.js')})
        const {readBackStoredDump} = require(${builtModule('dist', 'backup', 'verify.js')})
        const backend = new LocalBackend(process.env.STORE)
        let peak = 0
        const probed = {
          get: async (key, options) => (await backend.get(key, options)).pipe(new Transform({
            transform(chunk, _encoding, callback) {
              peak = Math.max(peak, process.memoryUsage().arrayBuffers)
              callback(null, chunk)
            },
          })),
        }
        ;(async () => {
          let total = 0
          if (${throughDbb}) total = (await readBackStoredDump(probed, 'big.sql.gz', undefined, {decompress: false})).sizeBytes
          else await pipeline(await probed.get('big.sql.gz'), new Writable({write(chunk, _encoding, callback) { total += chunk.length; callback() }}))
          process.stdout.write(JSON.stringify({peak, total}))
        })()`,
        {STORE: root},
      ),
    )
  }, 60_000)

  // A backup with a compressor program (pigz, zstd): dbb reads only the program's output, 64 KiB
  // Buffers dead once hashed, checked and written. At 10× the default dump they put the peak over
  // 100 MB (BENCHMARKS.md, "Session 22"). The real pipeline and local backend, a producer of 256 MiB
  // of random bytes (zstd stores them as they are, so all of them reach dbb), sampled at every stored
  // chunk; the control reads the same program's output from a plain pipe.
  it("keeps the dead buffers of a compressor program's output near the check interval, where a plain read of that output piles them up", async () => {
    await expectCollectedBelowPlain(undefined, (root, throughDbb) =>
      runChild(
        `
        const {LocalBackend} = require(${builtModule('src', 'plugins', 'local', 'dist', 'local-backend.js')})
        const {streamToStorage} = require(${builtModule('dist', 'backup', 'pipeline.js')})
        const {spawnTool} = require(${builtModule('dist', 'backup', 'child-process.js')})
        let peak = 0
        const sample = () => (peak = Math.max(peak, process.memoryUsage().arrayBuffers))
        ;(async () => {
          let total = 0
          if (${throughDbb}) {
            const result = await streamToStorage({
              start: (signal, output) => spawnTool('head', ['-c', '${SIZE}', '/dev/urandom'], {PATH: process.env.PATH}, signal, output),
              commandName: 'head', storage: new LocalBackend(process.env.STORE), key: 'random.sql.zst', codec: 'zstd',
              onProgress: sample,
            })
            total = result.sourceBytes
          } else {
            // What the control reads is zstd's output: the random bytes plus zstd's block headers.
            const child = require('node:child_process').spawn('sh', ['-c', 'head -c ${SIZE} /dev/urandom | zstd -1 -q -c'], {stdio: ['ignore', 'pipe', 'inherit']})
            for await (const chunk of child.stdout) {
              total += chunk.length
              sample()
            }
          }
          process.stdout.write(JSON.stringify({peak, total}))
        })()`,
        {STORE: root},
      ),
    )
  }, 60_000)

  // Buffers that lived through two scavenges sit in the old generation, where scavenges never free
  // them (in a backup: buffers caught by an incremental marking cycle). Above the threshold the
  // collector collects fully. (No control run without it: V8 may collect fully on its own at any
  // time, so "they stay" cannot be asserted without flakiness.)
  it('frees dead buffers that scavenges cannot, once their memory is above the full-collection threshold', async () => {
    const remaining = (fullCollectionBytes: number) =>
      runChild(`
        // Scavenges only, while the buffers are alive: they are promoted to the old generation.
        const scavenge = deadBufferCollector(1, Number.MAX_SAFE_INTEGER)
        let kept = Array.from({length: 20}, (_, index) => Buffer.alloc(1024 * 1024, index))
        for (let round = 0; round < 3; round++) scavenge(1)
        const sum = kept.reduce((total, buffer) => total + buffer[5], 0)
        kept = null
        const collect = deadBufferCollector(1, ${fullCollectionBytes})
        ;(async () => {
          for (let round = 0; round < 10; round++) {
            collect(1)
            await new Promise((resolve) => setTimeout(resolve, 10))
          }
          process.stdout.write(JSON.stringify({sum, arrayBuffers: process.memoryUsage().arrayBuffers}))
        })()`)

    const collected = await remaining(8 * 1024 * 1024)
    expect(collected.sum).toBe(190)
    expect(collected.arrayBuffers).toBeLessThan(2 * 1024 * 1024)
  }, 60_000)
})
