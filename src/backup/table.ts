import {formatAge, formatBytes, renderTable} from '../format'
import {BackupListing, BackupMetadata, DamagedBackup, newestFirst} from './metadata'

/** One row of `backup list --json` (and of GET /api/v1/backups): a complete backup's metadata, or a damaged one's id and cause. */
export type ListedBackup = (BackupMetadata & {status: 'ok'}) | DamagedBackup

/** Complete and damaged backups in one list, newest first, each with its status. */
export function listedBackups(listing: BackupListing): ListedBackup[] {
  const complete: ListedBackup[] = listing.backups.map((backup) => ({...backup, status: 'ok' as const}))
  return [...complete, ...listing.damaged].sort(newestFirst)
}

/** The backup table `dbb backup list` and `dbb restore` (without an argument) print; damaged backups show as such, never hidden. */
export function backupTable(backups: BackupMetadata[] | BackupListing, now = new Date()): string {
  const entries = Array.isArray(backups) ? listedBackups({backups, damaged: []}) : listedBackups(backups)
  if (entries.length === 0) return 'No backups.'
  return renderTable(
    ['ID', 'STATUS', 'TYPE', 'CREATED (UTC)', 'AGE', 'SIZE', 'SHA256', 'PG', 'BY'],
    entries.map((entry) => {
      const created = [entry.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), formatAge(entry.createdAt, now)]
      if (entry.status !== 'ok') return [entry.id, entry.status, entry.type, ...created, entry.storedBytes === undefined ? '-' : formatBytes(entry.storedBytes), '-', '-', '-']
      return [entry.id, 'ok', entry.type, ...created, formatBytes(entry.sizeBytes), entry.sha256.slice(0, 12), entry.pgVersion, entry.triggeredBy]
    }),
  )
}
