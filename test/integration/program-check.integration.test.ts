import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'

import {InStreamCheck, InStreamGunzipCheck, ProgramCheck, createInStreamCheck, reportsSizeAsExpected} from '../../src/compress/gzip-check'
import {requireCodec} from '../../src/compress/codec-streams'
import {CodecName} from '../../src/compress/codecs'
import {ConfigError, OperationError} from '../../src/errors'
import {runningChildren} from '../helpers/children'
import {tempDir} from '../helpers/cli'

/**
 * The in-stream check of a backup whose compressor is a program (`pg_dump | zstd`, `pg_dump |
 * pigz`): the codec's own program decodes what is sent — `zstd -t`, which reports the decoded size,
 * or `pigz -d` into `wc -c` — so the decoded bytes never pass through dbb (src/compress/gzip-check.ts,
 * ProgramCheck). Attacked with damaged streams, a decoder killed mid-stream and a count that lies or
 * is missing; every failure names the check and leaves no program running.
 */
describe.each<[CodecName, string, string]>([
  ['zstd', 'zstd', 'gzip'],
  ['gzip', 'pigz', 'zstd'],
  ['gzip', 'igzip', 'zstd'],
])('the in-stream %s check by the %s program', (codec, program, other) => {
  // Dump-like: repetitive SQL and random bytes, 6 MB.
  const whole = Buffer.concat(Array.from({length: 60}, (_, index) => (index % 3 === 0 ? randomBytes(40_000) : Buffer.from(`INSERT INTO t VALUES (${index}, 'row');\n`.repeat(1500)))))
  /** Compressed by the program under test (its check decodes what it wrote), or by the other codec's. */
  const compress = (name: string, input: Buffer) => execFileSync(name === codec ? program : name === 'zstd' ? 'zstd' : 'pigz', ['-c', '-1'], {input, maxBuffer: 64 * 1024 * 1024})
  const compressed = compress(codec, whole)

  /** Feeds `body` in 64 KiB chunks: the decoded count, or the first failure's message. */
  async function runCheck(check: InStreamCheck, body: Buffer): Promise<{count?: number; error?: string}> {
    try {
      for (let offset = 0; offset < body.length; offset += 65_536) await check.write(body.subarray(offset, offset + 65_536))
      return {count: await check.finish()}
    } catch (error) {
      return {error: (error as Error).message}
    } finally {
      check.destroy()
    }
  }

  /** The pids of a check's decoder and wc (gzip's) that are still running. */
  const running = (check: ProgramCheck) => {
    const {decoder, counter} = check as unknown as {decoder: {pid: number}; counter?: {pid: number}}
    const alive = new Set(runningChildren().map(({pid}) => pid))
    return [decoder.pid, counter?.pid].filter((pid): pid is number => pid !== undefined && alive.has(pid))
  }

  it('is the check a backup through the compressor program gets, and counts what the stream decodes to', async () => {
    for (const [compressorProgram, kind] of [
      [true, ProgramCheck],
      [false, InStreamGunzipCheck],
    ] as const) {
      const made = createInStreamCheck(codec, compressorProgram ? program : undefined)
      made.destroy()
      expect(made).toBeInstanceOf(kind)
    }

    const check = new ProgramCheck(codec, program)
    expect(check.decodedBytes).toBeUndefined()
    expect(await runCheck(check, compressed)).toEqual({count: whole.length})
    // Two streams one after the other decode as one (what `zstd -dc` / `gunzip -c` of the file gives a restore).
    expect(await runCheck(new ProgramCheck(codec, program), Buffer.concat([compressed, compressed]))).toEqual({count: 2 * whole.length})
  })

  it.each<[string, (body: Buffer) => Buffer]>([
    ['a stream missing its last 5 bytes', (body) => body.subarray(0, body.length - 5)],
    ['half the stream', (body) => body.subarray(0, body.length >> 1)],
    ['one flipped byte', (body) => Buffer.from(body).fill(body[body.length >> 1] ^ 0x40, body.length >> 1, (body.length >> 1) + 1)],
    ["the other codec's bytes (which the program might decode)", () => compress(other, whole)],
    ['no bytes at all', () => Buffer.alloc(0)],
  ])('refuses %s, naming the check, and leaves neither program running', async (_name, damage) => {
    const check = new ProgramCheck(codec, program)
    const outcome = await runCheck(check, damage(compressed))
    expect(outcome.count).toBeUndefined()
    expect(outcome.error).toMatch(new RegExp(`^the compressed stream failed its in-stream ${codec} check: `))
    await waitUntil(() => running(check).length === 0)
  })

  it('a decoder killed mid-stream fails the check (never a short count)', async () => {
    const check = new ProgramCheck(codec, program)
    await check.write(compressed.subarray(0, 65_536))
    const decoder = (check as unknown as {decoder: {pid: number}}).decoder
    process.kill(decoder.pid, 'SIGKILL')
    const outcome = await runCheck(check, compressed.subarray(65_536))
    expect(outcome.count).toBeUndefined()
    expect(outcome.error).toMatch(new RegExp(`in-stream ${codec} check: ${program} killed by SIGKILL`))
    await waitUntil(() => running(check).length === 0)
  })

  // zstd reports the decoded size itself and needs no wc; pigz decodes into wc.
  const needsWc = codec === 'gzip'

  it(`without ${needsWc ? `wc or ${program}` : program} on PATH, Node's decoder checks instead: it counts, and refuses half a stream`, async () => {
    const saved = process.env.PATH
    const bin = await tempDir()
    try {
      // A PATH with only the other of the two programs (or with wc alone, for zstd's check).
      for (const missing of needsWc ? ['wc', program] : [program]) {
        const present = missing === 'wc' ? program : 'wc'
        await fs.rm(bin, {recursive: true, force: true})
        await fs.mkdir(bin)
        await fs.symlink(execFileSync('sh', ['-c', `command -v ${present}`], {encoding: 'utf8'}).trim(), `${bin}/${present}`)
        process.env.PATH = bin
        const check = createInStreamCheck(codec, program)
        expect([missing, check instanceof InStreamGunzipCheck]).toEqual([missing, true])
        expect(await runCheck(check, compressed)).toEqual({count: whole.length})
        const half = await runCheck(createInStreamCheck(codec, program), compressed.subarray(0, compressed.length >> 1))
        expect(half.count).toBeUndefined()
        expect(half.error).toMatch(new RegExp(`^the compressed stream failed its in-stream ${codec} check: `))
      }

      if (!needsWc) {
        // zstd without wc: still the program's check.
        await fs.rm(bin, {recursive: true, force: true})
        await fs.mkdir(bin)
        await fs.symlink(execFileSync('sh', ['-c', 'command -v zstd'], {encoding: 'utf8'}).trim(), `${bin}/zstd`)
        process.env.PATH = bin
        const check = createInStreamCheck(codec, program)
        expect(check).toBeInstanceOf(ProgramCheck)
        expect(await runCheck(check, compressed)).toEqual({count: whole.length})
      }
    } finally {
      process.env.PATH = saved
      await fs.rm(bin, {recursive: true, force: true})
    }
  })

  if (needsWc) {
    it('a counter that prints no number fails the check', async () => {
      const bin = await tempDir()
      await fs.writeFile(`${bin}/wc`, '#!/bin/sh\ncat > /dev/null\necho "wc: not today"\n', {mode: 0o755})
      await withFirstOnPath(bin, async () => {
        const outcome = await runCheck(new ProgramCheck(codec, program), compressed)
        expect(outcome.error).toMatch(new RegExp(`in-stream ${codec} check: wc -c exited 0 and printed "wc: not today"`))
      })
    })
  } else {
    // A zstd that words its `-t` report otherwise (another version): found by the probe, and the
    // stream is decoded into wc instead — the same proof, never a failed backup for the wording.
    it("a zstd whose report reads otherwise is probed once and checked by decoding into wc: the same count, damage still refused", async () => {
      const bin = await tempDir()
      const real = execFileSync('sh', ['-c', 'command -v zstd'], {encoding: 'utf8'}).trim()
      // Only -t's report changes (stderr through sed); decoding (-d -c) is the real zstd's.
      await fs.writeFile(`${bin}/zstd`, `#!/bin/bash\nexec ${real} "$@" 2> >(sed 's/ bytes/ octets décodés/' >&2)\n`, {mode: 0o755})
      await withFirstOnPath(bin, async () => {
        expect(reportsSizeAsExpected('zstd')).toBe(false)
        const check = createInStreamCheck('zstd', 'zstd')
        expect(check).toBeInstanceOf(ProgramCheck)
        expect(await runCheck(check, compressed)).toEqual({count: whole.length})
        const damaged = Buffer.from(compressed)
        damaged[damaged.length >> 1] ^= 0xff
        const outcome = await runCheck(createInStreamCheck('zstd', 'zstd'), damaged)
        expect(outcome.count).toBeUndefined()
        expect(outcome.error).toMatch(/^the compressed stream failed its in-stream zstd check: zstd exit code 1/)
      })

      expect(reportsSizeAsExpected('zstd')).toBe(true)
    })

    // requireCodec's availability check is the probe itself: a backup starts zstd once before its
    // dump (the probe), then once as its compressor and once as its check.
    it('requireCodec runs the probe once per PATH, and the check takes its answer without another zstd run', async () => {
      const bin = await tempDir()
      const real = execFileSync('sh', ['-c', 'command -v zstd'], {encoding: 'utf8'}).trim()
      const runs = `${bin}/runs`
      await fs.writeFile(`${bin}/zstd`, `#!/bin/sh\necho "$*" >> ${runs}\nexec ${real} "$@"\n`, {mode: 0o755})
      const started = async () => (await fs.readFile(runs, 'utf8').catch(() => '')).split('\n').filter(Boolean)
      await withFirstOnPath(bin, async () => {
        await Promise.all([requireCodec('zstd', 'compress'), requireCodec('zstd', 'compress')])
        await requireCodec('zstd', 'decompress')
        expect(await started()).toEqual(['-t --no-progress'])
        expect(reportsSizeAsExpected('zstd')).toBe(true)
        const check = createInStreamCheck('zstd', 'zstd')
        expect(await runCheck(check, compressed)).toEqual({count: whole.length})
        // The probe, then the check's own decoder: nothing asked zstd anything else.
        expect(await started()).toEqual(['-t --no-progress', '-t --no-progress'])
      })
    })

    it('a zstd that does not decode a valid frame fails requireCodec before anything is touched, saying what it printed', async () => {
      const bin = await tempDir()
      const real = execFileSync('sh', ['-c', 'command -v zstd'], {encoding: 'utf8'}).trim()
      await fs.writeFile(`${bin}/zstd`, '#!/bin/sh\ncat > /dev/null\necho "zstd: error while loading shared libraries" >&2\nexit 1\n', {mode: 0o755})
      await withFirstOnPath(bin, async () => {
        await expect(requireCodec('zstd', 'compress')).rejects.toThrow(
          new OperationError('the zstd program exited with 1 decoding a 40-byte test frame: zstd: error while loading shared libraries'),
        )
        // Mended under a running process (dbb serve): the failure was not kept, the next backup may go.
        await fs.writeFile(`${bin}/zstd`, `#!/bin/sh\nexec ${real} "$@"\n`, {mode: 0o755})
        await expect(requireCodec('zstd', 'compress')).resolves.toBeUndefined()
      })

      // And none on PATH at all: exit 2 (a ConfigError) saying what to install.
      await withFirstOnPath(await tempDir(), () => expect(requireCodec('zstd', 'compress')).rejects.toThrow(ConfigError), {only: true})
    })

    // The report gone after the probe said it is there (zstd replaced under a running serve; here -q):
    // the check fails; a size is never guessed.
    it('a decoder that exits 0 without the report the probe found fails the check', async () => {
      const bin = await tempDir()
      const real = execFileSync('sh', ['-c', 'command -v zstd'], {encoding: 'utf8'}).trim()
      await fs.writeFile(`${bin}/zstd`, `#!/bin/sh\nexec ${real} -q "$@"\n`, {mode: 0o755})
      await withFirstOnPath(bin, async () => {
        const outcome = await runCheck(new ProgramCheck(codec, program, true), compressed)
        expect(outcome.count).toBeUndefined()
        expect(outcome.error).toMatch(/in-stream zstd check: zstd exited 0 without reporting the decoded size/)
      })
    })
  }
})

/** Runs `body` with `bin` first on PATH (`only`: as the whole PATH), then puts PATH back and removes `bin`. */
async function withFirstOnPath(bin: string, body: () => Promise<unknown>, {only = false} = {}): Promise<void> {
  const saved = process.env.PATH
  process.env.PATH = only ? bin : `${bin}:${saved}`
  try {
    await body()
  } finally {
    process.env.PATH = saved
    await fs.rm(bin, {recursive: true, force: true})
  }
}

async function waitUntil(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
