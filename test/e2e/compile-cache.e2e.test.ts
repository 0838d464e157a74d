import {execFileSync, spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {BIN, cliEnv, collect, runCli, tempDir} from '../helpers/cli'

/**
 * dbb's compile cache through the real CLI (bin/run.js, src/compile-cache.ts): written to a
 * private directory of the user's home on the first run, used by the next, and never trusted
 * where someone else could have written it. A damaged cache costs only the time it would save.
 */
describe('the compile cache of the dbb CLI', () => {
  let home: string
  beforeEach(async () => {
    home = await tempDir('dbb-cc-home-')
  })
  afterEach(() => fs.rmSync(home, {recursive: true, force: true}))

  const cacheDir = () => path.join(home, '.cache', 'dbb', 'compile-cache')
  /** Every cache file Node wrote (it keeps them in a directory per Node version, architecture and user). */
  const cacheFiles = () =>
    fs.existsSync(cacheDir()) ? fs.readdirSync(cacheDir(), {recursive: true, withFileTypes: true}).filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name)) : []
  const listEmpty = async (env: Record<string, string> = {}) => {
    const result = await runCli(['backup', 'list', '--json', '--storage', 'local', '--local-dir', home], {HOME: home, ...env})
    expect([result.code, result.stderr]).toEqual([0, ''])
    expect(JSON.parse(result.stdout)).toEqual([])
  }
  /** How many modules compiled from the cache, by Node's own debug output (stderr). */
  const acceptedFromCache = async () => {
    const result = await runCli(['backup', 'list', '--json', '--storage', 'local', '--local-dir', home], {HOME: home, NODE_DEBUG_NATIVE: 'COMPILE_CACHE'})
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual([])
    return result.stderr.split('\n').filter((line) => /code cache for .* was accepted/.test(line)).length
  }

  it('the first run writes the cache in a private directory; the next runs from it', async () => {
    await listEmpty()
    expect(fs.statSync(cacheDir()).mode & 0o777).toBe(0o700)
    const written = cacheFiles()
    // Hundreds of modules (oclif, zod, dbb) compile for a listing; each has its entry.
    expect(written.length).toBeGreaterThan(0)
    expect(written.map((file) => fs.statSync(file).size).reduce((a, b) => a + b, 0)).toBeGreaterThan(100_000)
    expect(await acceptedFromCache()).toBeGreaterThan(100)
    await listEmpty()
    expect(cacheFiles()).toEqual(written)
  })

  it('a damaged cache (every entry overwritten with garbage) is ignored: the command still answers', async () => {
    await listEmpty()
    for (const file of cacheFiles()) fs.writeFileSync(file, Buffer.alloc(fs.statSync(file).size, 0x5a))
    expect(await acceptedFromCache()).toBe(0)
    await listEmpty()
    // And truncated to nothing.
    for (const file of cacheFiles()) fs.truncateSync(file, 0)
    expect(await acceptedFromCache()).toBe(0)
    await listEmpty()
  })

  it('a cache directory others can write, or a symlink, is not used: nothing is written there', async () => {
    fs.mkdirSync(path.join(home, '.cache'), {mode: 0o775})
    fs.chmodSync(path.join(home, '.cache'), 0o775)
    await listEmpty()
    expect(fs.readdirSync(path.join(home, '.cache'))).toEqual([])

    fs.chmodSync(path.join(home, '.cache'), 0o700)
    const planted = path.join(home, 'planted')
    fs.mkdirSync(planted, {mode: 0o700})
    fs.mkdirSync(path.join(home, '.cache', 'dbb'), {mode: 0o700})
    fs.symlinkSync(planted, cacheDir())
    await listEmpty()
    expect(fs.readdirSync(planted)).toEqual([])
  })

  it("NODE_DISABLE_COMPILE_CACHE=1 turns it off; the operator's NODE_COMPILE_CACHE is used instead of dbb's", async () => {
    await listEmpty({NODE_DISABLE_COMPILE_CACHE: '1'})
    expect(fs.existsSync(path.join(home, '.cache'))).toBe(false)

    const theirs = path.join(home, 'theirs')
    await listEmpty({NODE_COMPILE_CACHE: theirs})
    expect(fs.existsSync(path.join(home, '.cache'))).toBe(false)
    expect(fs.readdirSync(theirs, {recursive: true}).length).toBeGreaterThan(0)
  })

  it('a command that moves a backup\'s bytes (here restore) starts without it, even with a warm cache', async () => {
    await listEmpty()
    expect(await acceptedFromCache()).toBeGreaterThan(100)
    const result = await runCli(['restore', '--help'], {HOME: home, NODE_DEBUG_NATIVE: 'COMPILE_CACHE'})
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('restore')
    expect(result.stderr).not.toContain('[compile cache]')
  })

  it('a cache the user cannot write (read-only, as on a full disk) is read, and the command answers with nothing on stderr', async () => {
    // As root every directory is writable: the run is then the server's user's, as restore_command's is.
    const asRoot = process.getuid!() === 0
    const run = async () =>
      collect(
        // runuser sets HOME to the user's own; env gives it this test's home back.
        spawn(asRoot ? 'runuser' : process.execPath, [...(asRoot ? ['-u', 'postgres', '--', 'env', `HOME=${home}`, process.execPath] : []), BIN, 'backup', 'list', '--json', '--storage', 'local', '--local-dir', home], {
          env: cliEnv({HOME: home}),
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      )
    if (asRoot) fs.chownSync(home, Number(execFileSync('id', ['-u', 'postgres'], {encoding: 'utf8'})), 0)
    const first = await run()
    expect([first.code, first.stderr, first.stdout.trim()]).toEqual([0, '', '[]'])
    expect(cacheFiles().length).toBeGreaterThan(0)
    // Read-only, and emptied of half its entries, so the next run has modules it cannot write.
    cacheFiles().filter((_, index) => index % 2 === 0).forEach((file) => fs.rmSync(file))
    const readOnly = (mode: number) => {
      for (const dir of [cacheDir(), ...fs.readdirSync(cacheDir()).map((entry) => path.join(cacheDir(), entry))]) fs.chmodSync(dir, mode)
    }
    readOnly(0o500)
    try {
      const again = await run()
      expect([again.code, again.stderr, again.stdout.trim()]).toEqual([0, '', '[]'])
    } finally {
      readOnly(0o700)
    }
  })
})
