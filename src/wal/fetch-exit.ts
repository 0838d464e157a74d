import {openSync, rmSync} from 'node:fs'

import {EXIT_WAL_FETCH_FATAL, EXIT_WAL_NOT_IN_ARCHIVE} from '../errors'

/**
 * The last line of defence of the restore_command exit-code contract (see EXIT_WAL_FETCH_FATAL).
 * The wal fetch command maps its own failures, but a process can also end through paths it never
 * sees: oclif failing to load, a flag parse error (exit 2), an uncaught exception or unhandled
 * rejection (Node exits 1), a bug. Installed by bin/run.js before anything else loads when the
 * command is `wal fetch`: then the process exits 0, EXIT_WAL_NOT_IN_ARCHIVE only after the command
 * declared a positive "no such object" from storage, and EXIT_WAL_FETCH_FATAL in every other case.
 */
let notInArchiveDeclared = false
let installed = false
/** Temporary files a fetch is writing into pg_wal: removed if the process dies of a fatal error mid-write. */
const temporaryFiles = new Set<string>()

/**
 * Creates `file` (a `.dbb-partial` beside a fetch's destination, 0600; truncated if a killed
 * process with the same pid left one) and tracks it until `untrack()`: a fatal exit removes it.
 * The open is synchronous on purpose: an asynchronous open still running in libuv's thread pool
 * when an exception ends the process creates the file after the handler removed it, which left a
 * `.dbb-partial` in pg_wal under CI load. Once this returns, the file exists, so removing it is
 * final; writes still in flight go to an unlinked inode.
 */
export function createTrackedTemporaryFile(file: string): {fd: number; untrack: () => void} {
  temporaryFiles.add(file)
  try {
    return {fd: openSync(file, 'w', 0o600), untrack: () => temporaryFiles.delete(file)}
  } catch (error) {
    temporaryFiles.delete(file)
    throw error
  }
}

/** Called by wal fetch when, and only when, storage answered NOT_FOUND for the requested file. */
export function declareNotInArchive(): void {
  notInArchiveDeclared = true
  process.exitCode = EXIT_WAL_NOT_IN_ARCHIVE
}

/** The exit code a wal fetch process that is about to exit with `code` must really use. */
export function walFetchExitCode(code: number, notInArchive: boolean): number {
  if (code === 0 && !notInArchive) return 0
  if (code === EXIT_WAL_NOT_IN_ARCHIVE && notInArchive) return EXIT_WAL_NOT_IN_ARCHIVE
  return EXIT_WAL_FETCH_FATAL
}

export function guardWalFetchExit(): void {
  if (installed) return
  installed = true
  const fatal = (what: string) => (error: unknown) => {
    process.stderr.write(`Error: dbb wal fetch: ${what}: ${error instanceof Error ? error.message : String(error)}\n`)
    // An exception can end the process mid-write: leave nothing half-written in pg_wal.
    for (const file of temporaryFiles) rmSync(file, {force: true})
    process.exit(EXIT_WAL_FETCH_FATAL)
  }

  process.on('uncaughtException', fatal('unexpected error'))
  process.on('unhandledRejection', fatal('unexpected error'))
  // process.exitCode set in an 'exit' listener is the code the process exits with (natural end and process.exit alike).
  process.on('exit', (code) => {
    process.exitCode = walFetchExitCode(code, notInArchiveDeclared)
  })
}
