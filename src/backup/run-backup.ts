import {requireClientForServer} from '../db/client-version'
import {libpqEnvironment, serverVersion} from '../db/connection'
import {OperationError, errorMessage} from '../errors'
import {spawnTool, toolVersion} from './child-process'
import {BackupDependencies, BackupOptions, BackupOutcome, storeBackup} from './store-backup'

export type {BackupDependencies, BackupOptions, BackupOutcome, TriggeredBy} from './store-backup'

export const PG_DUMP_ARGS = ['--no-owner', '--no-privileges', '--format=plain', '--no-password']

/**
 * One logical backup (pg_dump of DB_NAME as plain SQL), start to finish; shared by
 * `dbb backup run` and the scheduler/API of `dbb serve`. The server and pg_dump are checked
 * before anything is written; the rest of the lifecycle is storeBackup's.
 */
export async function runLogicalBackup(deps: BackupDependencies, options: BackupOptions): Promise<BackupOutcome> {
  return storeBackup(deps, options, async () => {
    const [pgVersion, pgDumpVersion] = await Promise.all([
      serverVersion(deps.database).catch((error: unknown) => {
        throw new OperationError(errorMessage(error))
      }),
      toolVersion('pg_dump'),
    ])
    requireClientForServer('pg_dump', pgDumpVersion, pgVersion)
    return {
      type: 'logical',
      kind: 'sql',
      commandName: 'pg_dump',
      start: (_id, signal) => spawnTool('pg_dump', PG_DUMP_ARGS, libpqEnvironment(deps.database), signal),
      sidecarFields: () => ({database: deps.database.database, pgVersion, pgDumpVersion, format: 'plain'}),
      context: {database: deps.database.database, pgVersion, pgDumpVersion},
    }
  })
}
