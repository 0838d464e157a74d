import {formatAge, formatBytes, renderTable} from '../format'
import type {BackupDrills, ListedDrill} from '../drill/result'
import {BackupListing, BackupMetadata, DamagedBackup, newestFirst} from './metadata'

/** One row of `backup list --json` (and of GET /api/v1/backups): a complete backup's metadata, or a damaged one's id and cause; with its last drill when drills were read. */
export type ListedBackup = ((BackupMetadata & {status: 'ok'}) | DamagedBackup) & {drill?: ListedDrill}

/** Complete and damaged backups in one list, newest first, each with its status (and its last drill, given `drills`). */
export function listedBackups(listing: BackupListing, drills?: BackupDrills): ListedBackup[] {
  const complete: ListedBackup[] = listing.backups.map((backup) => ({...backup, status: 'ok' as const, ...(drills ? {drill: drills.get(backup.id) ?? {status: 'never'}} : {})}))
  return [...complete, ...listing.damaged].sort(newestFirst)
}

/** The backup table `dbb backup list` and `dbb restore` (without an argument) print; damaged backups show as such, never hidden. */
export function backupTable(backups: BackupMetadata[] | BackupListing, now = new Date(), drills?: BackupDrills): string {
  const entries = Array.isArray(backups) ? listedBackups({backups, damaged: []}, drills) : listedBackups(backups, drills)
  if (entries.length === 0) return 'No backups.'
  // DRILL: the last restore drill (passed / failed / never), when the caller read them.
  const drillColumn = (entry: ListedBackup) => (drills ? [entry.drill?.status ?? '-'] : [])
  return renderTable(
    ['ID', 'STATUS', 'TYPE', 'CREATED (UTC)', 'AGE', 'SIZE', 'SHA256', 'PG', 'BY', ...(drills ? ['DRILL'] : [])],
    entries.map((entry) => {
      const created = [entry.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), formatAge(entry.createdAt, now)]
      if (entry.status !== 'ok') return [entry.id, entry.status, entry.type, ...created, entry.storedBytes === undefined ? '-' : formatBytes(entry.storedBytes), '-', '-', '-', ...drillColumn(entry)]
      return [entry.id, 'ok', entry.type, ...created, formatBytes(entry.sizeBytes), entry.sha256.slice(0, 12), entry.pgVersion, entry.triggeredBy, ...drillColumn(entry)]
    }),
  )
}
