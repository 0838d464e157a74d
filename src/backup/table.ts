import {formatAge, formatBytes, renderTable} from '../format'
import type {BackupMetadata} from './metadata'

/** The backup table `dbb backup list` and `dbb restore` (without an argument) print. */
export function backupTable(backups: BackupMetadata[], now = new Date()): string {
  if (backups.length === 0) return 'No backups.'
  return renderTable(
    ['ID', 'TYPE', 'CREATED (UTC)', 'AGE', 'SIZE', 'SHA256', 'PG', 'BY'],
    backups.map((backup) => [
      backup.id,
      backup.type,
      backup.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      formatAge(backup.createdAt, now),
      formatBytes(backup.sizeBytes),
      backup.sha256.slice(0, 12),
      backup.pgVersion,
      backup.triggeredBy,
    ]),
  )
}
