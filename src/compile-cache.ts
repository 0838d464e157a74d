import * as fs from 'node:fs'
import * as nodeModule from 'node:module'
import * as path from 'node:path'

/**
 * Node's on-disk compile cache for dbb's start-up: every `dbb` process compiles ≈ 3 MB of
 * JavaScript (oclif, zod, the AWS SDK, dbb) before it does anything, and with the V8 code cache
 * of the previous run that costs ≈ 60 ms less (BENCHMARKS.md, "Session 9").
 *
 * Node's default directory is a shared path in /tmp, and a code cache is code: V8 runs the
 * bytecode it holds without verifying it, so whoever can write the directory can run code as the
 * next dbb — root, in many setups. So dbb enables it only in a directory it can prove private:
 * `$XDG_CACHE_HOME/dbb/compile-cache` (else `$HOME/.cache/dbb/compile-cache`), every existing
 * component of it a real directory (no symlink) owned by root or this user and writable by no one
 * else (a sticky ancestor such as /tmp excepted), the missing ones created with mode 0700.
 * Anything else (no HOME, a read-only or foreign home, `sudo` keeping another user's HOME) means
 * no cache, silently: it is an optimization, never a reason to fail. An operator's
 * `NODE_COMPILE_CACHE` (Node enables it before dbb runs) and `NODE_DISABLE_COMPILE_CACHE=1` take
 * precedence. A cache directory that cannot be written (read-only, full) is read, and Node
 * drops what it cannot write without a word.
 */
export function enableCompileCache(argv: readonly string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.NODE_COMPILE_CACHE || env.NODE_DISABLE_COMPILE_CACHE || typeof nodeModule.enableCompileCache !== 'function') return undefined
  if (!startsWithCache(argv)) return undefined
  const directory = privateCacheDirectory(env)
  if (directory === undefined) return undefined
  const result = nodeModule.enableCompileCache(directory)
  return result.status === nodeModule.constants.compileCacheStatus.ENABLED ? result.directory : undefined
}

/**
 * Commands that move a backup's bytes run for seconds to hours, where 50 ms of start-up is noise,
 * and their peak memory is a target (≤ 100 MB for a local backup): the code a cache holds is
 * deserialized at start-up and cost them 2–3 MB of peak RSS (BENCHMARKS.md, "Session 9"). They
 * start without it; every other command (listing, check, prune, the per-segment WAL calls and
 * the WAL prefetcher and uploader, whose start PostgreSQL waits for) starts from it.
 */
export const STREAMING_COMMANDS = ['backup run', 'backup download', 'restore', 'drill', 'serve']

/** Whether the command in `argv` (oclif's `topic command` or `topic:command` form) starts from the cache. */
export function startsWithCache(argv: readonly string[]): boolean {
  const words: string[] = []
  for (const arg of argv) {
    if (arg.startsWith('-')) break
    words.push(...arg.split(':'))
  }

  const command = words.join(' ')
  return !STREAMING_COMMANDS.some((streaming) => command === streaming || command.startsWith(`${streaming} `))
}

/** The cache directory when it is (or was just made) private to this user; undefined otherwise. */
export function privateCacheDirectory(env: NodeJS.ProcessEnv, uid = process.getuid?.()): string | undefined {
  if (uid === undefined) return undefined
  const base = absolute(env.XDG_CACHE_HOME) ?? (absolute(env.HOME) && path.join(env.HOME!, '.cache'))
  if (base === undefined) return undefined
  const directory = path.join(base, 'dbb', 'compile-cache')
  let current = path.parse(directory).root
  for (const part of directory.slice(current.length).split(path.sep)) {
    current = path.join(current, part)
    let stats = lstatOrUndefined(current)
    if (stats === undefined) {
      try {
        fs.mkdirSync(current, {mode: 0o700})
      } catch {
        return undefined
      }

      stats = lstatOrUndefined(current)
    }

    if (!stats?.isDirectory() || (stats.uid !== uid && stats.uid !== 0)) return undefined
    // Writable by others only as a sticky ancestor (/tmp): there no one else can rename or remove what is ours.
    const sharedWritable = (stats.mode & 0o022) !== 0
    if (sharedWritable && (current === directory || (stats.mode & STICKY) === 0)) return undefined
  }

  return directory
}

/** S_ISVTX (Node's fs.constants does not name it). */
const STICKY = 0o1000

function absolute(value: string | undefined): string | undefined {
  return value && path.isAbsolute(value) ? path.normalize(value) : undefined
}

function lstatOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(file)
  } catch {
    return undefined
  }
}
