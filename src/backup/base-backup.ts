import type {BaseBackupConfig} from '../config'
import {requireClientForServer} from '../db/client-version'
import {libpqEnvironment, withClient} from '../db/connection'
import {OperationError, errorMessage} from '../errors'
import {parseLsn, parseSegmentSize, segmentNameForLsn} from '../wal/segments'
import {spawnTool, toolVersion} from './child-process'
import {BackupDependencies, BackupOptions, BackupOutcome, storeBackup} from './store-backup'

export interface BaseBackupDependencies extends BackupDependencies {
  baseBackup: BaseBackupConfig
}

/** Where pg_basebackup --verbose says the backup starts and stops in the WAL stream. */
export interface WalRange {
  startLsn: string
  timeline: number
  stopLsn: string
}

/**
 * pg_basebackup's arguments: the cluster as one tar stream on stdout (no copy on local disk). WAL
 * is either fetched into the tar at the end (`fetch`: the backup restores on its own) or left to
 * the archive (`none`: the server then waits until the archive has it). Connection settings are
 * in the environment, never here.
 */
export function pgBasebackupArgs(config: BaseBackupConfig, label: string): string[] {
  return ['-D', '-', '--format=tar', `--wal-method=${config.walMethod}`, `--checkpoint=${config.checkpoint}`, `--label=${label}`, '--no-password', '--verbose']
}

/** Reads the start/stop lines of `pg_basebackup --verbose` (messages forced to English with LC_ALL=C). */
export function parseWalRange(stderr: string): WalRange | undefined {
  const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/i.exec(stderr)
  const stop = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/i.exec(stderr)
  if (!start || !stop) return undefined
  return {startLsn: start[1], timeline: Number(start[2]), stopLsn: stop[1]}
}

/**
 * One physical base backup, the counterpart of runLogicalBackup through the same storeBackup
 * lifecycle: pg_basebackup's tar stream instead of pg_dump's SQL, and a sidecar that also records
 * the timeline, start/stop LSN and the first WAL segment a restore needs (what WAL pruning keeps).
 */
export async function runBaseBackup(deps: BaseBackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  return storeBackup(deps, options, async () => {
    const [server, pgBasebackupVersion] = await Promise.all([
      withClient(deps.database, async (client) => {
        const version = await client.query<{server_version: string}>('SHOW server_version')
        const segment = await client.query<{wal_segment_size: string}>('SHOW wal_segment_size')
        return {pgVersion: version.rows[0].server_version.split(' ')[0], walSegmentSize: parseSegmentSize(segment.rows[0].wal_segment_size)}
      }).catch((error: unknown) => {
        throw new OperationError(errorMessage(error))
      }),
      toolVersion('pg_basebackup'),
    ])
    requireClientForServer('pg_basebackup', pgBasebackupVersion, server.pgVersion)
    let verboseOutput = ''
    return {
      type: 'base',
      kind: 'tar',
      commandName: 'pg_basebackup',
      start(id, signal, output) {
        // LC_ALL=C: the start/stop lines are parsed, so they must not be translated.
        const tool = spawnTool('pg_basebackup', pgBasebackupArgs(deps.baseBackup, `dbb ${id}`), {...libpqEnvironment(deps.database), LC_ALL: 'C'}, signal, output)
        tool.child.stderr.on('data', (text: string) => {
          verboseOutput = (verboseOutput + text).slice(-64 * 1024)
        })
        return tool
      },
      sidecarFields() {
        const range = parseWalRange(verboseOutput)
        if (!range) throw new OperationError('pg_basebackup did not report its WAL start and end points (expected in its --verbose output)')
        return {
          // A base backup holds the whole cluster, not one database.
          database: '*',
          pgVersion: server.pgVersion,
          pgBasebackupVersion,
          format: 'tar',
          timeline: range.timeline,
          startLsn: range.startLsn,
          stopLsn: range.stopLsn,
          firstWalSegment: segmentNameForLsn(range.timeline, parseLsn(range.startLsn), server.walSegmentSize),
          walSegmentSize: server.walSegmentSize,
          walMethod: deps.baseBackup.walMethod,
        }
      },
      context: {pgVersion: server.pgVersion, pgBasebackupVersion},
    }
  })
}
