import type {ClientBase} from 'pg'

import type {DumpFormat} from '../config/core'
import {requireClientForServer} from '../db/client-version'
import {connect, libpqEnvironment, withClient} from '../db/connection'
import {AbortedError, OperationError, errorMessage} from '../errors'
import {spawnTool, toolVersion} from './child-process'
import {KIND_OF_FORMAT, PG_DUMP_CUSTOM_ARGS, withArchiveCheck} from './custom-format'
import {DumpSnapshot, exportSnapshot} from './contents-record'
import {ContentsRecord, contentsRecordSchema} from './contents-record-schema'
import {DatabaseProfile, DumpPrivileges, captureDatabaseProfile, captureDumpPrivileges, databaseProfileSchema, dumpPrivilegesSchema} from './database-profile'
import {BackupDependencies, BackupOptions, BackupOutcome, storeBackup} from './store-backup'

export type {BackupDependencies, BackupOptions, BackupOutcome, TriggeredBy} from './store-backup'

/**
 * pg_dump's own default keeps owners (ALTER … OWNER TO) and privileges (GRANT/REVOKE): restored
 * as a superuser, a dump without them turns every object superuser-owned and every function
 * executable by PUBLIC — a SECURITY DEFINER function then runs anyone's SQL as superuser. dbb
 * keeps them unless BACKUP_NO_OWNER asks otherwise (see README "Ownership and privileges").
 */
export const PG_DUMP_ARGS = ['--format=plain']
export const PG_DUMP_NO_OWNER_ARGS = ['--no-owner', '--no-privileges']

export function pgDumpArgs(noOwner: boolean, format: DumpFormat = 'plain'): string[] {
  const formatArgs = format === 'custom' ? PG_DUMP_CUSTOM_ARGS : PG_DUMP_ARGS
  return noOwner ? [...PG_DUMP_NO_OWNER_ARGS, ...formatArgs] : formatArgs
}

/**
 * One logical backup (pg_dump of DB_NAME as plain SQL, or a custom archive with BACKUP_FORMAT=custom), start to finish; shared by
 * `dbb backup run` and the scheduler/API of `dbb serve`. The server and pg_dump are checked
 * before anything is written; the rest of the lifecycle is storeBackup's.
 */
export async function runLogicalBackup(deps: BackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  const noOwner = deps.logicalDump?.noOwner ?? false
  const format = deps.logicalDump?.format ?? 'plain'
  // Held from before pg_dump starts until it exits (or the backup fails earlier): see contents-record.ts.
  let snapshot: DumpSnapshot | undefined
  try {
    return await storeBackup(deps, options, async () => {
      // Three independent round trips at once; all settle before any failure is reported, so a
      // snapshot opened beside a failed check is held in `snapshot` and released below.
      const [described, dumpVersion, opened] = await Promise.allSettled([
        withClient(deps.database, (client) => describeSource(client, deps.database.database, noOwner)).catch((error: unknown) => {
          throw new OperationError(errorMessage(error))
        }),
        toolVersion('pg_dump'),
        openDumpSnapshot(deps, options.signal),
      ])
      if (opened.status === 'fulfilled') snapshot = opened.value
      for (const settled of [described, dumpVersion, opened]) if (settled.status === 'rejected') throw settled.reason
      const {pgVersion, databaseProfile, privileges} = (described as PromiseFulfilledResult<SourceFacts>).value
      const pgDumpVersion = (dumpVersion as PromiseFulfilledResult<string>).value
      requireClientForServer('pg_dump', pgDumpVersion, pgVersion)
      const {id: snapshotId, pid: snapshotPid, release} = snapshot!
      const capture = snapshot!.capture
      let record: ContentsRecord | undefined
      return {
        type: 'logical',
        kind: KIND_OF_FORMAT[format],
        commandName: 'pg_dump',
        // A custom archive is also read by dbb (its completeness check, custom-format.ts), so it
        // passes through dbb to the compressor; plain SQL goes straight into the compressor program.
        outputThroughDbb: format === 'custom',
        start: (_id, signal, output) => {
          const dump = spawnTool('pg_dump', [...pgDumpArgs(noOwner, format), `--snapshot=${snapshotId}`], libpqEnvironment(deps.database), signal, output)
          const tool = format === 'custom' ? withArchiveCheck(dump, signal) : dump
          // Counted in pg_dump's snapshot while it dumps (after the id is claimed: a table lock that
          // holds pg_dump up holds the count up too). The dump is complete only with its record:
          // the exit gate waits for both, and a failed count fails the backup.
          const counted = capture({checksums: deps.logicalDump?.recordChecksums ?? false}).then(
            (captured) => {
              record = contentsRecordSchema.parse(captured)
            },
            (error: unknown) => {
              throw new OperationError(`recording the database's contents failed: ${errorMessage(error)}`)
            },
          )
          void Promise.allSettled([tool.exited, counted]).then(release)
          const exited = tool.exited.then(async (status) => {
            // pg_dump failed or was killed: its status is the cause; a count still waiting is stopped.
            if (status.code !== 0) {
              counted.catch(() => {})
              // A count waiting on a lock (as pg_dump was) does not notice its connection closing: end it on the server.
              await withClient(deps.database, (client) => client.query('SELECT pg_terminate_backend($1)', [snapshotPid])).catch(() => {})
              await release()
              return status
            }

            await counted
            return status
          })
          return {...tool, exited}
        },
        sidecarFields: () => {
          if (!record) throw new OperationError('the contents record is missing')
          return {database: deps.database.database, pgVersion, pgDumpVersion, format, databaseProfile, privileges, contents: record}
        },
        context: {database: deps.database.database, pgVersion, pgDumpVersion, format, ownersAndPrivileges: !noOwner},
      }
    })
  } finally {
    await snapshot?.release()
  }
}

/**
 * The snapshot pg_dump dumps, exported by a session of dbb's own, in which what a restore of it
 * must contain is counted (src/backup/contents-record.ts).
 */
async function openDumpSnapshot(deps: BackupDependencies, signal?: AbortSignal): Promise<DumpSnapshot> {
  const client = await connect(deps.database).catch((error: unknown) => {
    throw new OperationError(errorMessage(error))
  })
  const snapshot = await exportSnapshot(client).catch((error: unknown) => {
    throw new OperationError(`exporting a snapshot for pg_dump failed: ${errorMessage(error)}`)
  })
  if (signal?.aborted) {
    await snapshot.release()
    throw new AbortedError('backup interrupted')
  }

  return snapshot
}

interface SourceFacts {
  pgVersion: string
  databaseProfile?: DatabaseProfile
  privileges: DumpPrivileges
}

/**
 * The server version and what a restore needs to know beyond the dump, through one connection to
 * the source database. Checked against the sidecar schema here, before pg_dump starts: a sidecar
 * that its own reader refused would make the backup unlistable.
 */
async function describeSource(client: ClientBase, database: string, noOwner: boolean): Promise<SourceFacts> {
  const version = await client.query<{server_version: string}>('SHOW server_version')
  const profile = await captureDatabaseProfile(client, database)
  return {
    pgVersion: version.rows[0].server_version.split(' ')[0],
    databaseProfile: profile && databaseProfileSchema.parse(profile),
    privileges: dumpPrivilegesSchema.parse(await captureDumpPrivileges(client, !noOwner)),
  }
}
