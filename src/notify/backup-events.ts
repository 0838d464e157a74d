import type {BackupMetadata, DamagedBackup} from '../backup/metadata'
import {describeDamaged} from '../backup/prune'
import type {BackupOutcome} from '../backup/run-backup'
import type {NotificationEvent} from './events'

/**
 * The events of one backup run, built the same way wherever the backup ran (`dbb backup run`,
 * serve's scheduler or API, serve's base backups), so every target sees one wording.
 */
export interface BackupRunFacts {
  type: 'logical' | 'base'
  /** The storage location (storage.location: no credentials). */
  location: string
  triggeredBy: string
}

export function backupStarted(facts: BackupRunFacts): NotificationEvent {
  return {kind: 'backup.started', summary: `${facts.type} backup started (${facts.triggeredBy}) on ${facts.location}`, details: {...facts}}
}

export function backupSucceeded(facts: BackupRunFacts, metadata: BackupMetadata): NotificationEvent {
  return {
    kind: 'backup.succeeded',
    summary: `${facts.type} backup ${metadata.id} stored on ${facts.location} (${metadata.sizeBytes} bytes in ${(metadata.durationMs / 1000).toFixed(1)} s)`,
    details: {...facts, backupId: metadata.id, sizeBytes: metadata.sizeBytes, durationMs: metadata.durationMs, sha256: metadata.sha256},
  }
}

/** `error` must already be secret-free (errorMessage()). */
export function backupFailed(facts: BackupRunFacts, error: string, backupId: string | null = null): NotificationEvent {
  return {kind: 'backup.failed', summary: `${facts.type} backup failed (${facts.triggeredBy}) on ${facts.location}: ${error}`, details: {...facts, backupId, error}}
}

export function retentionRefused(location: string, damaged: DamagedBackup[]): NotificationEvent {
  return {
    kind: 'retention.refused',
    summary: `retention on ${location}: ${describeDamaged(damaged)}`,
    details: {location, backupIds: damaged.map((entry) => entry.id).join(',')},
  }
}

/** The events after a finished backup: succeeded or failed, and retention's refusals if its prune met damaged backups. */
export function backupFinishedEvents(facts: BackupRunFacts, result: {outcome?: BackupOutcome; error?: string; backupId?: string | null}): NotificationEvent[] {
  if (!result.outcome) return [backupFailed(facts, result.error ?? 'unknown error', result.backupId ?? null)]
  const events = [backupSucceeded(facts, result.outcome.metadata)]
  const damaged = result.outcome.pruned?.damaged ?? []
  if (damaged.length > 0) events.push(retentionRefused(facts.location, damaged))
  return events
}

/**
 * A restore drill's result, for the drill module (`dbb drill`, serve's DRILL_SCHEDULE) to emit:
 * `notifier.emit(drillFinished({backupId, location, passed, reason, durationMs}))`.
 * drill.passed is opt-in (NOTIFY_ON_SUCCESS); `reason` must be secret-free (errorMessage()).
 */
export function drillFinished(result: {backupId: string; location: string; passed: boolean; reason?: string; durationMs?: number}): NotificationEvent {
  const details = {backupId: result.backupId, location: result.location, durationMs: result.durationMs ?? null, reason: result.reason ?? null}
  return result.passed
    ? {kind: 'drill.passed', summary: `restore drill of ${result.backupId} passed${result.durationMs === undefined ? '' : ` (restored in ${(result.durationMs / 1000).toFixed(1)} s)`}`, details}
    : {kind: 'drill.failed', summary: `restore drill of ${result.backupId} failed: ${result.reason ?? 'unknown reason'}`, details}
}
