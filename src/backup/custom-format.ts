import {once} from 'node:events'
import {Transform} from 'node:stream'

import type {DumpFormat} from '../config/core'
import {ExitStatus, SpawnedTool, spawnToolWithInput} from './child-process'
import type {BackupKind} from './naming'

/**
 * BACKUP_FORMAT=custom (issue 20 item 3): pg_dump's custom archive with its own compression off
 * (`--compress=0`), so dbb's codec compresses it like a plain dump — the same in-stream check,
 * sha256, read-back and sidecar — and `gunzip -c x.dump.gz | pg_restore` restores it with stock
 * tools. pg_dump ignores `--no-owner`/`--no-privileges` for archives (pg_restore applies them):
 * they are still passed, and restore passes them to pg_restore when the sidecar says the backup
 * was taken without owners (src/restore/archive.ts).
 */
export const PG_DUMP_CUSTOM_ARGS = ['--format=custom', '--compress=0']

/** Each format's id kind: `.sql.<codec>` or `.dump.<codec>`. */
export const KIND_OF_FORMAT: Record<DumpFormat, BackupKind> = {plain: 'sql', custom: 'dump'}

/**
 * pg_restore reading the archive as pg_dump writes it and writing the SQL it would run to
 * /dev/null: it parses the header, the whole table of contents and every data block up to the
 * last, so a zero exit proves the archive is complete and readable by the pg_restore that will
 * restore it. This is the custom format's "dump complete" proof; `--list` alone would read only
 * the TOC at the head of the archive, which pg_dump writes before any data.
 */
export const ARCHIVE_CHECK_ARGS = ['--file=/dev/null']

/**
 * Wraps a running `pg_dump --format=custom`: its output goes to the backup unchanged (`output`)
 * and, chunk by chunk, to pg_restore's stdin (ARCHIVE_CHECK_ARGS). `exited` reports pg_dump's
 * failure first; when pg_dump succeeded, the checker's failure as a failure of the backup, in
 * pg_restore's words. The pipeline's exit gate waits for it, so a backup whose archive does not
 * parse is never stored as complete. Both are killed through `signal`.
 */
export function withArchiveCheck(dump: SpawnedTool, signal: AbortSignal): SpawnedTool {
  const checker = spawnToolWithInput('pg_restore', ARCHIVE_CHECK_ARGS, {}, signal)
  const stdin = checker.child.stdin
  stdin.on('error', () => {}) // EPIPE when pg_restore stops early: its exit status says why
  let checkerExit: ExitStatus | undefined
  void checker.exited.then((status) => {
    checkerExit = status
  })

  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (checkerExit || stdin.destroyed) return callback(null, chunk)
      if (stdin.write(chunk)) return callback(null, chunk)
      Promise.race([once(stdin, 'drain'), checker.exited]).then(
        () => callback(null, chunk),
        () => callback(null, chunk),
      )
    },
    flush(callback) {
      stdin.end()
      callback()
    },
  })
  const archive = dump.child.stdout
  // The recipe sets outputThroughDbb for the custom format, so pg_dump always writes to its own pipe here.
  if (archive === null) throw new Error('the archive check needs pg_dump writing to its own stdout, not into a compressor program')
  archive.pipe(tee)
  archive.on('error', (error) => tee.destroy(error))

  // Set when pg_dump succeeded but the archive did not parse: then stderr() is pg_restore's.
  let failedCheck: ExitStatus | undefined
  const exited = dump.exited.then(async (status): Promise<ExitStatus> => {
    if (status.code !== 0) {
      checker.child.kill('SIGKILL')
      return status
    }

    const checked = await checker.exited
    if (checked.code === 0) return status
    failedCheck = checked
    return {code: checked.code ?? 1, signal: checked.signal}
  })
  return {
    ...dump,
    output: tee,
    exited,
    stderr: () => (failedCheck ? `pg_restore could not read the archive pg_dump wrote: ${checker.stderr()}` : dump.stderr()),
  }
}
