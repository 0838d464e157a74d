#!/usr/bin/env node
// A wal command's output is messages — for PostgreSQL's log (archive_command, restore_command) or a
// background process's log file — never data, `--json` aside. When it cannot be written (that log's
// disk full, a pipe whose reader went away), the segment is stored or restored all the same and the
// exit code must say so: an unhandled 'error' on stdout made `wal push` exit 1 after storing the
// segment, and PostgreSQL retried it for ever while pg_wal grew. Logs: src/logger.ts logDestination.
// The oclif commands say the same through DbbCommand.stdoutIsReport; this covers the fast paths,
// which answer before oclif loads.
if ((process.argv[2] === 'wal' || String(process.argv[2]).startsWith('wal:')) && !process.argv.includes('--json')) {
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {})
}

// archive_command / restore_command answered by the background (src/wal/foreground.ts): a segment
// the spool uploader already stored ahead, or one the prefetcher already queued. Those answers
// load nothing else, because PostgreSQL starts this process once per 16 MiB of WAL.
const walForm = process.argv[2] === 'wal' && ['', 'local', 's3'].includes((process.env.STORAGE_BACKEND ?? '').trim())
if (walForm && process.argv[3] === 'push' && process.argv[4] === '--async' && process.argv.length === 6) {
  const foreground = require('../dist/wal/foreground')
  const code = foreground.pushFromReadAhead(process.argv[5], process.env)
  if (code !== undefined) process.exit(code)
  // This push spools the segment itself. The first of a drain (no uploader runs) starts the uploader
  // before it loads the rest of dbb, so the two Node starts overlap (foreground.startUploaderEarly).
  foreground.startUploaderEarly(process.argv[5], process.env, (spoolDir, walDir) =>
    require('../dist/backup/child-process').spawnDetachedDbb(__filename, ['wal', 'spool-upload', walDir], foreground.uploaderLogFor(spoolDir)),
  )
}
// restore_command contract first, before anything that could fail loads: `dbb wal fetch` never exits
// 1–125 unless storage said "no such object" (src/wal/fetch-exit.ts). 200 is EXIT_WAL_FETCH_FATAL of
// src/errors.ts, repeated here only for when dist/ cannot be loaded (test/unit/wal-fetch-exit.unit.test.ts keeps them equal).
if ((process.argv[2] === 'wal' && process.argv[3] === 'fetch') || process.argv[2] === 'wal:fetch') {
  try {
    require('../dist/wal/fetch-exit').guardWalFetchExit()
  } catch (error) {
    process.stderr.write(`Error: dbb wal fetch cannot start: ${error.message}\n`)
    process.exit(200)
  }

  // The storage flags dbb restore writes into restore_command become the variables they set, for
  // this process and the prefetcher it starts (src/wal/fetch-args.ts).
  const fetchArgs = process.argv[3] === 'fetch' ? require('../dist/wal/fetch-args').parseWalFetchArgs(process.argv.slice(4)) : undefined
  if (fetchArgs) Object.assign(process.env, fetchArgs.overrides)
  if (fetchArgs && ['', 'local', 's3'].includes((process.env.STORAGE_BACKEND ?? '').trim())) {
    const foreground = require('../dist/wal/foreground')
    // Called only with WAL_SPOOL_DIR set (prefetch needs it); its log goes there (foreground.prefetchLogFor).
    const startPrefetcher = (name, segmentSize) =>
      require('../dist/backup/child-process').spawnDetachedDbb(__filename, ['wal', 'prefetch', name, String(segmentSize)], foreground.prefetchLogFor(process.env.WAL_SPOOL_DIR.trim()))
    const code = foreground.fetchFromQueue(fetchArgs.name, fetchArgs.destination, process.env, startPrefetcher)
    if (code !== undefined) process.exit(code)
    foreground.startPrefetcherEarly(fetchArgs.name, process.env, startPrefetcher)
    // Started here (a recovery's first request): asked, instead of loading the rest of dbb.
    const answer = foreground.prefetcherStartedEarly() ? foreground.answerFromPrefetcher(fetchArgs.name, fetchArgs.destination, process.env, startPrefetcher) : undefined
    if (answer === 'queued') process.exit(0)
    if (answer === 'absent') {
      // Storage's positive "no such object", to a request made after PostgreSQL asked: exit 1 is allowed.
      require('../dist/wal/fetch-exit').declareNotInArchive()
      process.stderr.write(`${fetchArgs.name} is not in the WAL archive (storage answered the prefetcher after this request)\n`)
      process.exit(require('../dist/errors').EXIT_WAL_NOT_IN_ARCHIVE)
    }
  }
}

// Memory (issue 15): Node 24's V8 grows the young generation to 32 MB while a backup streams (every
// buffer in flight survives a scavenge or two), which alone was ~30 MB of the peak RSS. Its size at
// start-up is fixed when the isolate is created, but how far it grows is read at each resize, so
// capping the growth here keeps it at V8's initial 1 MB semi-spaces without a flag on the command
// line or a re-exec (measurements in BENCHMARKS.md, "Memory without flags"). An operator who sizes
// the young generation themselves (NODE_OPTIONS / node flags) keeps their choice.
if (!/semi-space|new-space/.test(`${process.env.NODE_OPTIONS ?? ''} ${process.execArgv.join(' ')}`)) {
  require('node:v8').setFlagsFromString('--semi-space-growth-factor=1')
}

// The AWS SDK warns when it deems the Node version old; dbb pins the SDK and its Node (package.json engines).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
// Compression runs on libuv's thread pool (src/compress), sized once, at its first use: give it a
// thread per core plus one for file I/O, unless the operator chose a size.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, require('node:os').availableParallelism() + 1))
// Under a uid without a passwd entry (docker run --user 12345:0, OpenShift's arbitrary uids)
// os.userInfo() throws, and oclif calls it to guess the shell whenever SHELL is unset.
if (process.env.SHELL === undefined) {
  try {
    require('node:os').userInfo()
  } catch {
    process.env.SHELL = '/bin/sh'
  }
}

// Before the modules that take time to compile (oclif, zod, the AWS SDK), and after the wal fetch
// guard: whatever happens here, a restore_command never exits 1. An optimization, never a reason
// to fail (src/compile-cache.ts).
try {
  require('../dist/compile-cache').enableCompileCache()
} catch {
  // No cache: the command runs as it would without one.
}

// An unsupported Node says so on every command a person or a job runs, never on `wal` ones:
// PostgreSQL runs those once per WAL segment, and the warning would fill its log.
if (process.argv[2] !== 'wal' && !String(process.argv[2]).startsWith('wal:')) {
  try {
    const warning = require('../dist/node-support').unsupportedNodeWarning()
    if (warning) process.stderr.write(`Warning: ${warning}\n`)
  } catch {
    // Never a reason to fail.
  }
}

// PostgreSQL runs archive_command/restore_command once per WAL segment: their exact forms skip
// oclif's start-up (src/wal/fast-cli.ts); anything else, or a fast-path miss, goes through oclif.
const fastWal = process.argv[2] === 'wal' ? require('../dist/wal/fast-cli') : undefined
const fastInvocation = fastWal?.fastInvocation(process.argv.slice(2))
if (fastInvocation) {
  fastWal.runFast(fastInvocation).then((code) => {
    process.exitCode = code
  })
} else {
  require('@oclif/core').execute({dir: __dirname})
}
