import {execFile, execFileSync} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'
import {crc32} from 'node:zlib'

import {spawnTool} from '../../src/backup/child-process'
import {PipelineOptions, streamToStorage} from '../../src/backup/pipeline'
import {CodecName} from '../../src/compress/codecs'
import {programFor} from '../../src/compress/program-compressor'
import {LocalBackend} from '../../src/plugins/local/src'
import {runningChildren} from '../helpers/children'
import {pathWithout, tempDir} from '../helpers/cli'

const run = promisify(execFile)

/**
 * THE pipeline with a compressor program (zstd; igzip or pigz for gzip): the producer writes straight into
 * the compressor and dbb reads only compressed bytes. Checked with the stock tools a user restores
 * with, and attacked: a producer that dies, a compressor that dies, a compressor that damages its
 * output while exiting 0.
 */
describe.each<[CodecName, string, string[]]>([
  ['zstd', 'zstd', ['zstd', '-dc']],
  ['gzip', 'igzip', ['gzip', '-dc']],
  ['gzip', 'pigz', ['gzip', '-dc']],
])('%s through the %s program, fed by the producer directly', (codec, program, decompress) => {
  let dir: string
  let savedPath: string | undefined
  let storageDir: string
  let storage: LocalBackend
  const extension = codec === 'zstd' ? 'zst' : 'gz'

  beforeAll(async () => {
    dir = await tempDir('dbb-program-compressor-')
    // gzip goes through igzip where it is on PATH (level 1): pigz's case runs without it.
    savedPath = process.env.PATH
    if (program === 'pigz') process.env.PATH = await pathWithout('igzip', path.join(dir, 'path-without-igzip'))
    expect(programFor(codec, 1)?.program).toBe(program)
    storageDir = path.join(dir, 'store')
    await fs.mkdir(storageDir)
    storage = new LocalBackend(storageDir)
  })

  afterAll(async () => {
    process.env.PATH = savedPath
    await fs.rm(dir, {recursive: true, force: true})
  })

  /** `input` as a producer's output (cat of a file), through the pipeline into storage under `key`. */
  async function storeFile(input: Buffer, key: string, more: Partial<PipelineOptions> = {}) {
    const source = path.join(dir, `${key}.in`)
    await fs.writeFile(source, input)
    return streamToStorage({
      start: (signal, output) => spawnTool('cat', [source], {PATH: process.env.PATH}, signal, output),
      commandName: 'cat',
      storage,
      key,
      codec,
      compressionThreads: 2,
      ...more,
    })
  }

  it.each([
    ['0 bytes', Buffer.alloc(0)],
    ['1 byte', Buffer.from('\n')],
    ['SQL text', Buffer.from('INSERT INTO t VALUES (1, $$a row of text$$);\n'.repeat(60_000))],
    ['random data', randomBytes(3 * 1024 * 1024 + 17)],
  ])('%s: the stock decompressor returns the exact input; sha256, sizes and the decoded count are recorded', async (name, input) => {
    const key = `${name.replaceAll(' ', '-')}.sql.${extension}`
    const progress: (number | undefined)[] = []
    const result = await storeFile(input, key, {onProgress: (p) => progress.push(p.sourceBytes)})
    const stored = await fs.readFile(path.join(storageDir, key))
    const {stdout} = await run(decompress[0], [...decompress.slice(1), path.join(storageDir, key)], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(Buffer.compare(stdout, input)).toBe(0)
    expect(result).toEqual({
      sha256: createHash('sha256').update(stored).digest('hex'),
      sizeBytes: stored.length,
      sourceBytes: input.length,
      gzipCheckedBytes: input.length,
    })
    // What pg_dump wrote is known only decoded, and the codec's program checks and counts it at the
    // end (src/compress/gzip-check.ts): progress has the stored bytes, and no source count is made up.
    expect(progress.length).toBeGreaterThan(0)
    for (const bytes of progress) expect(bytes).toBeUndefined()
    if (codec === 'gzip') {
      // ONE gzip member: the last trailer's CRC-32 and length cover the whole input.
      expect(stored.readUInt32LE(stored.length - 8)).toBe(crc32(input) >>> 0)
      expect(stored.readUInt32LE(stored.length - 4)).toBe(input.length % 2 ** 32)
    }
  })

  it('encrypted with age, the check is Node\'s decoder (the decoder program would take CPU from age and dbb): progress counts the dump as it goes', async () => {
    const keyFile = path.join(dir, 'age-key.txt')
    execFileSync('age-keygen', ['-o', keyFile], {stdio: 'ignore'})
    const recipient = execFileSync('age-keygen', ['-y', keyFile], {encoding: 'utf8'}).trim()
    const input = Buffer.from('INSERT INTO t VALUES (1, $$a row of text$$);\n'.repeat(200_000))
    const progress: (number | undefined)[] = []
    const key = `encrypted.sql.${extension}.age`
    const result = await storeFile(input, key, {encryptTo: [recipient], onProgress: (p) => progress.push(p.sourceBytes)})
    expect(result.sourceBytes).toBe(input.length)
    expect(progress.length).toBeGreaterThan(0)
    for (const bytes of progress) expect(bytes).toEqual(expect.any(Number))
    const {stdout} = await run('bash', ['-o', 'pipefail', '-c', `age -d -i ${keyFile} ${path.join(storageDir, key)} | ${decompress.join(' ')}`], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(Buffer.compare(stdout, input)).toBe(0)
  })

  it('a producer that ignores the compressor is refused, not stored as an empty stream', async () => {
    const source = path.join(dir, 'ignored.in')
    await fs.writeFile(source, 'data')
    await expect(
      streamToStorage({start: (signal) => spawnTool('cat', [source], {PATH: process.env.PATH}, signal), commandName: 'cat', storage, key: `ignored.sql.${extension}`, codec}),
    ).rejects.toThrow(/started without the compressor program as its output/)
    expect(await fs.readdir(storageDir)).not.toContainEqual(expect.stringMatching(/^ignored/))
  })

  it('a producer failing half-way: its failure is reported, nothing stored, no compressor left running', async () => {
    const script = `head -c 3000000 /dev/urandom; echo "pg_dump: error: connection lost" >&2; exit 3`
    await expect(
      streamToStorage({
        start: (signal, output) => spawnTool('sh', ['-c', script], {PATH: process.env.PATH}, signal, output),
        commandName: 'pg_dump',
        storage,
        key: `failed.sql.${extension}`,
        codec,
      }),
    ).rejects.toThrow(/pg_dump failed \(exit code 3\): pg_dump: error: connection lost/)
    expect(await fs.readdir(storageDir)).not.toContainEqual(expect.stringMatching(/^failed/))
    expect(runningPrograms(program)).toEqual([])
  })

  it('the compressor killed mid-stream: the compressor is named, the producer stopped, nothing stored', async () => {
    const key = `compressor-killed.sql.${extension}`
    const stream = streamToStorage({
      start: (signal, output) => spawnTool('sh', ['-c', 'while true; do head -c 65536 /dev/urandom; done'], {PATH: process.env.PATH}, signal, output),
      commandName: 'producer',
      storage,
      key,
      codec,
    })
    const outcome = stream.then(
      () => undefined,
      (error: Error) => error,
    )
    let pids: string[] = []
    const deadline = Date.now() + 10_000
    while (pids.length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      pids = runningPrograms(program, false)
    }

    expect(pids).not.toEqual([])
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL')
    const error = await outcome
    expect(error?.message).toMatch(new RegExp(`${program} failed while compressing \\(killed by SIGKILL\\)`))
    expect(await fs.readdir(storageDir)).not.toContainEqual(expect.stringMatching(/^compressor-killed/))
    expect(runningPrograms(program)).toEqual([])
  })

  it('a compressor that flips one byte of its output and exits 0: refused by the in-stream check, nothing stored', async () => {
    const bin = path.join(dir, 'bin')
    await fs.mkdir(bin, {recursive: true})
    const real = execFileSync('bash', ['-c', `command -v ${program}`], {encoding: 'utf8'}).trim()
    // Byte 20 000 of the output: inside the compressed blocks, past every header (shorter outputs,
    // such as the igzip probe's, pass untouched: the probe is not what is attacked here). Only when
    // compressing: the zstd check runs `zstd -t` (igzip's and pigz's, `-d`), which stays the real program.
    await fs.writeFile(
      path.join(bin, program),
      `#!/bin/sh\ncase " $* " in *" -d "*|*" -t "*) exec ${real} "$@" ;; esac\n${real} "$@" | perl -e 'binmode STDIN; binmode STDOUT; local $/; my $d = <STDIN>; substr($d, 20000, 1) ^= "\\x01" if length($d) > 20000; print $d'\n`,
      {mode: 0o755},
    )
    const savedPath = process.env.PATH
    process.env.PATH = `${bin}:${savedPath}`
    try {
      await expect(storeFile(randomBytes(2 * 1024 * 1024), `flipped.sql.${extension}`)).rejects.toThrow(new RegExp(`failed its in-stream ${codec} check`))
    } finally {
      process.env.PATH = savedPath
    }

    expect(await fs.readdir(storageDir)).not.toContainEqual(expect.stringMatching(/^flipped/))
  })
})

/** Pids of this process's children named `name` (still running, not zombies): the compressor, or with `decoders` also the in-stream check's (`-d`, zstd's `-t`). */
function runningPrograms(name: string, decoders = true): string[] {
  return runningChildren()
    .filter(({command, args}) => command === name && (decoders || !(args.includes('-d') || args.includes('-t'))))
    .map(({pid}) => String(pid))
}

/**
 * igzip is an accelerator: one that does not work as dbb runs it (its library missing, another
 * program of that name, output that is not gzip) must never fail a backup. programFor probes it
 * once per PATH and falls back to pigz; a backup then goes through pigz and is checked by pigz.
 */
describe('igzip only where it works', () => {
  let dir: string
  let savedPath: string | undefined
  beforeAll(async () => {
    dir = await tempDir('dbb-igzip-probe-')
    savedPath = process.env.PATH
  })
  afterAll(async () => {
    process.env.PATH = savedPath
    await fs.rm(dir, {recursive: true, force: true})
  })

  it.each([
    ['a broken igzip (exit 127, as with its library missing)', '#!/bin/sh\necho "igzip: error while loading shared libraries: libisal.so.2" >&2\nexit 127\n'],
    ['an igzip whose output is not gzip (another program of that name)', '#!/bin/sh\ncat\n'],
    ['an igzip that compresses but cannot decode (its check would fail every backup)', `#!/bin/sh\ncase " $* " in *" -d "*) exit 1 ;; esac\nexec ${execFileSync('sh', ['-c', 'command -v igzip'], {encoding: 'utf8'}).trim()} "$@"\n`],
  ])('%s: gzip goes through pigz, and the backup is stored and checked', async (name, script) => {
    const bin = path.join(dir, name.replaceAll(/\W+/g, '-'))
    await fs.mkdir(bin)
    await fs.writeFile(path.join(bin, 'igzip'), script, {mode: 0o755})
    process.env.PATH = `${bin}:${savedPath}`
    try {
      expect(programFor('gzip', 1)?.program).toBe('pigz')
      const input = Buffer.from('INSERT INTO t VALUES (1, $$a row$$);\n'.repeat(20_000))
      const source = path.join(bin, 'dump.sql')
      await fs.writeFile(source, input)
      const storage = new LocalBackend(bin)
      const result = await streamToStorage({start: (signal, output) => spawnTool('cat', [source], {PATH: process.env.PATH}, signal, output), commandName: 'cat', storage, key: 'b.sql.gz', codec: 'gzip'})
      expect(result.gzipCheckedBytes).toBe(input.length)
      const {stdout} = await run('gzip', ['-dc', path.join(bin, 'b.sql.gz')], {encoding: 'buffer', maxBuffer: 16 * 1024 * 1024})
      expect(Buffer.compare(stdout, input)).toBe(0)
      // pigz -1 writes XFL 04 (fastest); igzip 00.
      expect((await fs.readFile(path.join(bin, 'b.sql.gz')))[8]).toBe(4)
    } finally {
      process.env.PATH = savedPath
    }
  })

  it('the real igzip passes the probe at level 1; other levels keep pigz', () => {
    expect(programFor('gzip', 1)?.program).toBe('igzip')
    expect(programFor('gzip', 2)?.program).toBe('pigz')
    expect(programFor('gzip', 9)?.program).toBe('pigz')
  })
})
