import type {ClientBase} from 'pg'

import {requireClientForServer} from '../db/client-version'
import {libpqEnvironment, withClient} from '../db/connection'
import {OperationError, errorMessage} from '../errors'
import {spawnTool, toolVersion} from './child-process'
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

export function pgDumpArgs(noOwner: boolean): string[] {
  return noOwner ? [...PG_DUMP_NO_OWNER_ARGS, ...PG_DUMP_ARGS] : PG_DUMP_ARGS
}

/**
 * One logical backup (pg_dump of DB_NAME as plain SQL), start to finish; shared by
 * `dbb backup run` and the scheduler/API of `dbb serve`. The server and pg_dump are checked
 * before anything is written; the rest of the lifecycle is storeBackup's.
 */
export async function runLogicalBackup(deps: BackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  const noOwner = deps.logicalDump?.noOwner ?? false
  return storeBackup(deps, options, async () => {
    const [source, pgDumpVersion] = await Promise.all([
      withClient(deps.database, (client) => describeSource(client, deps.database.database, noOwner)).catch((error: unknown) => {
        throw new OperationError(errorMessage(error))
      }),
      toolVersion('pg_dump'),
    ])
    const {pgVersion, databaseProfile, privileges} = source
    requireClientForServer('pg_dump', pgDumpVersion, pgVersion)
    return {
      type: 'logical',
      kind: 'sql',
      commandName: 'pg_dump',
      start: (_id, signal) => spawnTool('pg_dump', pgDumpArgs(noOwner), libpqEnvironment(deps.database), signal),
      sidecarFields: () => ({database: deps.database.database, pgVersion, pgDumpVersion, format: 'plain', databaseProfile, privileges}),
      context: {database: deps.database.database, pgVersion, pgDumpVersion, ownersAndPrivileges: !noOwner},
    }
  })
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
