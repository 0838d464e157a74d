import * as fs from 'node:fs'
import * as path from 'node:path'

import {STREAMING_COMMANDS, enableCompileCache, privateCacheDirectory, startsWithCache} from '../../src/compile-cache'
import {ROOT, tempDir} from '../helpers/cli'

/**
 * A V8 code cache is code the next dbb runs (root, often): dbb's compile cache is used only in a
 * directory no one else can write (src/compile-cache.ts). Each case builds a home the way an
 * attacker or a careless setup would, and checks that dbb refuses it and leaves it as it was.
 */
describe('the compile cache directory', () => {
  const uid = process.getuid!()
  const mode = (file: string) => fs.statSync(file).mode & 0o7777
  let home: string
  beforeEach(async () => {
    home = await tempDir('dbb-cc-')
  })
  afterEach(() => fs.rmSync(home, {recursive: true, force: true}))

  it('is $HOME/.cache/dbb/compile-cache, the missing directories created private (0700)', () => {
    expect(privateCacheDirectory({HOME: home})).toBe(path.join(home, '.cache', 'dbb', 'compile-cache'))
    for (const dir of ['.cache', '.cache/dbb', '.cache/dbb/compile-cache']) expect([dir, mode(path.join(home, dir))]).toEqual([dir, 0o700])
    // Again, with everything in place: the same answer, nothing changed.
    expect(privateCacheDirectory({HOME: home})).toBe(path.join(home, '.cache', 'dbb', 'compile-cache'))
  })

  it('XDG_CACHE_HOME takes the place of $HOME/.cache', () => {
    const xdg = path.join(home, 'xdg')
    expect(privateCacheDirectory({HOME: home, XDG_CACHE_HOME: xdg})).toBe(path.join(xdg, 'dbb', 'compile-cache'))
    expect(fs.existsSync(path.join(home, '.cache'))).toBe(false)
  })

  it('no HOME, or a relative one: no cache, nothing created', () => {
    expect(privateCacheDirectory({})).toBeUndefined()
    expect(privateCacheDirectory({HOME: 'relative/home', XDG_CACHE_HOME: 'relative/xdg'})).toBeUndefined()
    expect(fs.existsSync('relative')).toBe(false)
  })

  it('a directory on the way that others can write (not sticky): refused, nothing created below it', () => {
    fs.mkdirSync(path.join(home, '.cache'))
    fs.chmodSync(path.join(home, '.cache'), 0o775)
    expect(privateCacheDirectory({HOME: home})).toBeUndefined()
    expect(fs.readdirSync(path.join(home, '.cache'))).toEqual([])
  })

  it('the cache directory itself writable by others: refused, even with the sticky bit', () => {
    fs.mkdirSync(path.join(home, '.cache', 'dbb', 'compile-cache'), {recursive: true})
    fs.chmodSync(path.join(home, '.cache', 'dbb', 'compile-cache'), 0o1777)
    expect(privateCacheDirectory({HOME: home})).toBeUndefined()
  })

  it('a sticky, world-writable ancestor such as /tmp is accepted (others cannot replace what is ours there)', () => {
    fs.chmodSync(home, 0o1777)
    expect(privateCacheDirectory({HOME: home})).toBe(path.join(home, '.cache', 'dbb', 'compile-cache'))
    expect(mode(path.join(home, '.cache'))).toBe(0o700)
  })

  it('a symlink on the way: refused, and its target is not written', () => {
    const elsewhere = path.join(home, 'elsewhere')
    fs.mkdirSync(elsewhere, {mode: 0o700})
    fs.mkdirSync(path.join(home, '.cache', 'dbb'), {recursive: true, mode: 0o700})
    fs.symlinkSync(elsewhere, path.join(home, '.cache', 'dbb', 'compile-cache'))
    expect(privateCacheDirectory({HOME: home})).toBeUndefined()
    expect(fs.readdirSync(elsewhere)).toEqual([])
  })

  it("a directory another user owns (sudo keeping the caller's HOME): refused", () => {
    fs.mkdirSync(path.join(home, '.cache'), {mode: 0o700})
    if (uid === 0) {
      // As root: the home belongs to an ordinary user (nobody).
      fs.chownSync(path.join(home, '.cache'), 65_534, 65_534)
      expect(privateCacheDirectory({HOME: home}, 0)).toBeUndefined()
    } else {
      // As an ordinary user: the same rule seen from another uid (root-owned directories are trusted, ours is not root's).
      expect(privateCacheDirectory({HOME: home}, uid + 1)).toBeUndefined()
    }

    expect(fs.existsSync(path.join(home, '.cache', 'dbb'))).toBe(false)
  })

  it("the operator's NODE_COMPILE_CACHE or NODE_DISABLE_COMPILE_CACHE wins: dbb enables nothing of its own", () => {
    expect(enableCompileCache(['backup', 'list'], {HOME: home, NODE_COMPILE_CACHE: path.join(home, 'theirs')})).toBeUndefined()
    expect(enableCompileCache(['backup', 'list'], {HOME: home, NODE_DISABLE_COMPILE_CACHE: '1'})).toBeUndefined()
    expect(fs.existsSync(path.join(home, '.cache'))).toBe(false)
  })

  it('the commands kept from it are commands dbb has (a rename would otherwise put them back on the cache silently)', () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, unknown>}
    for (const command of STREAMING_COMMANDS) expect([command, command.replaceAll(' ', ':') in manifest.commands]).toEqual([command, true])
  })

  it('commands that move a backup\'s bytes start without it (their memory is the target); the rest from it', () => {
    for (const argv of [['backup', 'run'], ['backup:run', '--json'], ['backup', 'run', '--type', 'base'], ['restore', 'latest', '--force'], ['backup', 'download', 'x'], ['drill'], ['serve']]) {
      expect([argv.join(' '), startsWithCache(argv)]).toEqual([argv.join(' '), false])
    }

    for (const argv of [[], ['--version'], ['backup', 'list', '--json'], ['backup:list'], ['check'], ['prune'], ['wal', 'push', '--async', 'p'], ['wal', 'fetch', 'f', 'p'], ['wal', 'prefetch'], ['wal', 'spool-upload'], ['restored']]) {
      expect([argv.join(' '), startsWithCache(argv)]).toEqual([argv.join(' '), true])
    }
  })
})
