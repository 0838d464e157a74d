import {openSync, rmSync} from 'node:fs'
import {readdir, rm} from 'node:fs/promises'
import {constants} from 'node:os'
import * as path from 'node:path'

import {EXIT_WAL_FETCH_FATAL, EXIT_WAL_NOT_IN_ARCHIVE} from '../errors'
import {processAlive} from '../process-alive'

/**
 * The last line of defence of the restore_command exit-code contract (see EXIT_WAL_FETCH_FATAL).
 * The wal fetch command maps its own failures, but a process can also end through paths it never
 * sees: oclif failing to load, a flag parse error (exit 2), an uncaught exception or unhandled
 * rejection (Node exits 1), a bug. Installed by bin/run.js before anything else loads when the
 * command is `wal fetch`: then the process exits 0, EXIT_WAL_NOT_IN_ARCHIVE only after the command
 * declared a positive "no such object" from storage, 128 + n when signal n of TERMINATING_SIGNALS
 * ended it, and EXIT_WAL_FETCH_FATAL in every other case.
 */
let notInArchiveDeclared = false
let installed = false
/**
 * The signals that end a fetch from outside: PostgreSQL's fast shutdown sends SIGTERM to the
 * startup process's group (restore_command included), an immediate shutdown SIGQUIT, a terminal
 * SIGINT or SIGHUP. Each removes the fetch's temporary file, then exits 128 + n, which PostgreSQL
 * reads exactly as death by that signal (wait_result_is_signal: SIGTERM ends recovery quietly as a
 * shutdown, any other signal is fatal), so the contract is the one Node's default action had.
 */
const TERMINATING_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP'] as const
let signalExitCode: number | undefined
/** Temporary files a fetch is writing into pg_wal: removed if the process dies of a fatal error or a signal mid-write. */
const temporaryFiles = new Set<string>()

/**
 * The temporary file of a fetch into `destination`: `<destination>.<pid>-<tag>.dbb-partial`. Per
 * process and per download (two fetches of one name must never share an inode, see fetchWal), and
 * the pid lets a later fetch tell a SIGKILLed process's leftover from a live process's file.
 */
export function temporaryFileFor(destination: string, tag: string): string {
  return `${destination}.${process.pid}-${tag}.dbb-partial`
}

const TEMPORARY_FILE = /\.(\d+)-[^./]+\.dbb-partial$/
const sweptDirectories = new Set<string>()

/**
 * Removes, once per directory and process, the temporary files of fetches that no longer run: a
 * SIGKILL (the OOM killer, the kubelet after its grace period, the postmaster's SIGKILL five
 * seconds into an immediate shutdown) runs no handler, so its `.dbb-partial` stays in pg_wal.
 * PostgreSQL never reads one, but each is up to a segment. A file whose pid is alive is kept (even
 * if the pid was reused: harmless, it goes once that process ends), and so is this process's own.
 * Housekeeping only: any error here is ignored, never a fetch's failure.
 */
export async function removeDeadFetchesFiles(directory: string): Promise<string[]> {
  if (sweptDirectories.has(directory)) return []
  sweptDirectories.add(directory)
  const removed: string[] = []
  for (const entry of await readdir(directory).catch(() => [] as string[])) {
    const pid = Number(TEMPORARY_FILE.exec(entry)?.[1])
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue
    await rm(path.join(directory, entry), {force: true}).then(
      () => removed.push(entry),
      () => {},
    )
  }

  return removed
}

function removeTemporaryFiles(): void {
  for (const file of temporaryFiles) rmSync(file, {force: true})
}

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
export function walFetchExitCode(code: number, notInArchive: boolean, signalExit?: number): number {
  if (signalExit !== undefined) return signalExit
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
    removeTemporaryFiles()
    process.exit(EXIT_WAL_FETCH_FATAL)
  }

  for (const signal of TERMINATING_SIGNALS) {
    process.once(signal, () => {
      removeTemporaryFiles()
      signalExitCode = 128 + constants.signals[signal]
      process.exit(signalExitCode)
    })
  }

  process.on('uncaughtException', fatal('unexpected error'))
  process.on('unhandledRejection', fatal('unexpected error'))
  // process.exitCode set in an 'exit' listener is the code the process exits with (natural end and process.exit alike).
  process.on('exit', (code) => {
    process.exitCode = walFetchExitCode(code, notInArchiveDeclared, signalExitCode)
  })
}
