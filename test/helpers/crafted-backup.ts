import {writeLocalBackup} from './fake-backups'

/**
 * Writes a backup by hand into a local backup directory: a gzip of `sql` under `id` and a
 * sidecar whose size and sha256 match it, so dbb treats it as a complete, verified backup.
 * Lets tests restore SQL that dbb's own pipeline would never produce (e.g. failing half-way).
 */
export async function writeCraftedBackup(
  dir: string,
  sql: string,
  options: {id?: string; createdAt?: string; database?: string} = {},
): Promise<{id: string; sha256: string; sizeBytes: number}> {
  return writeLocalBackup(dir, new Date(options.createdAt ?? '2026-01-01T00:00:00.000Z'), {
    sql,
    id: options.id ?? 'backup_20260101T000000Z.sql.gz',
    database: options.database ?? 'crafted',
  })
}
