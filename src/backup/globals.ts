import {requireClientForServer} from '../db/client-version'
import {libpqEnvironment, serverVersion} from '../db/connection'
import {OperationError, errorMessage} from '../errors'
import {spawnTool, toolVersion} from './child-process'
import {globalsPrefix} from './naming'
import {BackupDependencies, BackupOptions, BackupOutcome, storeBackup} from './store-backup'

/** The sidecar type of a globals backup; restore picks them by it. */
export const GLOBALS_TYPE = 'globals'

/**
 * The cluster's globals (roles, their memberships and settings, tablespaces), as
 * `pg_dumpall --globals-only` writes them, stored as a backup of its own under
 * `<BACKUP_NAME_PREFIX>_-globals_<timestamp>.sql.gz`: the same lifecycle as a dump (claimed id, THE
 * pipeline, read back and sha256-verified, sidecar last, retention per prefix). Database dumps name
 * roles but never create them, so a restore onto a new server needs this first (`dbb restore --globals`).
 *
 * Reading role passwords needs pg_authid, which only a superuser may read: managed services
 * (RDS, Cloud SQL, Azure) refuse it, and GLOBALS_NO_ROLE_PASSWORDS=true (--no-role-passwords)
 * reads pg_roles instead; roles are then restored without passwords.
 */
export async function runGlobalsBackup(deps: BackupDependencies, options: BackupOptions, settings: {noRolePasswords: boolean}): Promise<BackupOutcome> {
  const args = ['--globals-only', `--database=${deps.database.database}`, ...(settings.noRolePasswords ? ['--no-role-passwords'] : [])]
  return storeBackup({...deps, namePrefix: globalsPrefix(deps.namePrefix)}, options, async () => {
    const [pgVersion, pgDumpallVersion] = await Promise.all([
      serverVersion(deps.database).catch((error: unknown) => {
        throw new OperationError(errorMessage(error))
      }),
      toolVersion('pg_dumpall'),
    ])
    requireClientForServer('pg_dumpall', pgDumpallVersion, pgVersion)
    return {
      type: GLOBALS_TYPE,
      kind: 'sql',
      commandName: 'pg_dumpall',
      start: (_id, signal, output) => spawnTool('pg_dumpall', args, libpqEnvironment(deps.database), signal, output),
      sidecarFields: () => ({database: deps.database.database, pgVersion, pgDumpallVersion, format: 'plain', noRolePasswords: settings.noRolePasswords}),
      context: {pgVersion, pgDumpallVersion, noRolePasswords: settings.noRolePasswords},
    }
  })
}

/** pg_dumpall's refusal on managed services, with what to set instead. */
export function explainGlobalsFailure(message: string): string {
  return /pg_authid/.test(message)
    ? `${message} — this role may not read role passwords (pg_authid; managed services never allow it): set GLOBALS_NO_ROLE_PASSWORDS=true, or BACKUP_GLOBALS=false`
    : message
}
