import {Counter, Gauge, Registry, collectDefaultMetrics} from 'prom-client'

import type {BackupMetadata} from '../backup/metadata'
import type {DrillResult} from '../drill/result'
import type {Job} from './jobs'

/**
 * What `/metrics` exposes, in a dedicated prom-client Registry (not the global one, so two
 * servers in one process — tests — do not share or clash). Alerting needs: are backups
 * succeeding, how old is the last good one, how long and large they are, is one running now.
 */
export class ServiceMetrics {
  readonly registry = new Registry()
  private readonly backups = new Counter({
    name: 'dbb_backups_total',
    help: 'Backup jobs finished by this process, by outcome and trigger.',
    labelNames: ['outcome', 'triggered_by'] as const,
    registers: [this.registry],
  })

  private readonly lastSuccess = new Gauge({
    name: 'dbb_backup_last_success_timestamp_seconds',
    help: 'When the newest successful backup finished (Unix time); 0 when there is none.',
    registers: [this.registry],
  })

  private readonly lastDuration = new Gauge({
    name: 'dbb_backup_last_success_duration_seconds',
    help: 'How long the newest successful backup took.',
    registers: [this.registry],
  })

  private readonly lastSize = new Gauge({
    name: 'dbb_backup_last_success_size_bytes',
    help: 'Compressed size of the newest successful backup.',
    registers: [this.registry],
  })

  private readonly inFlight = new Gauge({
    name: 'dbb_backup_in_flight',
    help: '1 while a backup job is queued or running, else 0.',
    registers: [this.registry],
  })

  // --- restore drills (issue 19) ---
  private readonly drills = new Counter({
    name: 'dbb_drills_total',
    help: 'Restore drills finished by this process, by outcome (passed, failed; error: no verdict).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })

  private readonly lastDrillSuccess = new Gauge({
    name: 'dbb_drill_last_success_timestamp_seconds',
    help: 'When the newest passed restore drill finished (Unix time); 0 when there is none.',
    registers: [this.registry],
  })

  private readonly lastDrillRestore = new Gauge({
    name: 'dbb_drill_last_restore_duration_seconds',
    help: 'Restore duration of the newest finished drill: the measured RTO of a logical restore.',
    registers: [this.registry],
  })

  constructor(options: {defaultMetrics?: boolean} = {}) {
    this.registry.setDefaultLabels({service: 'dbb'})
    if (options.defaultMetrics !== false) collectDefaultMetrics({register: this.registry, prefix: 'dbb_'})
    // Every series exists from the start, so a dashboard shows 0 rather than "no data".
    for (const outcome of ['succeeded', 'failed']) {
      for (const trigger of ['scheduler', 'api']) this.backups.inc({outcome, triggered_by: trigger}, 0)
    }

    this.lastSuccess.set(0)
    this.inFlight.set(0)
    for (const outcome of ['passed', 'failed', 'error']) this.drills.inc({outcome}, 0)
    this.lastDrillSuccess.set(0)
  }

  /** A drill finished here (result), or ended without a verdict (undefined). */
  drillFinished(result: DrillResult | undefined): void {
    this.drills.inc({outcome: result?.status ?? 'error'})
    if (result) this.recordDrill(result)
  }

  /** Seeds the drill gauges from storage at start. */
  recordDrill(result: DrillResult | undefined): void {
    if (!result) return
    this.lastDrillRestore.set(result.restoreMs / 1000)
    if (result.status === 'passed') this.lastDrillSuccess.set(Math.max(Date.parse(result.finishedAt) / 1000, 0))
  }

  /** Seeds the "last success" gauges from storage at start, so a restart does not reset them. */
  recordExistingBackup(backup: BackupMetadata | undefined): void {
    if (backup) this.recordSuccess(backup)
  }

  jobStarted(): void {
    this.inFlight.set(1)
  }

  jobFinished(job: Readonly<Job>, backup: BackupMetadata | undefined): void {
    this.inFlight.set(0)
    this.backups.inc({outcome: job.status === 'succeeded' || job.status === 'skipped' ? job.status : 'failed', triggered_by: job.triggeredBy})
    if (job.status === 'succeeded' && backup) this.recordSuccess(backup)
  }

  async render(): Promise<{contentType: string; body: string}> {
    return {contentType: this.registry.contentType, body: await this.registry.metrics()}
  }

  private recordSuccess(backup: BackupMetadata): void {
    const finishedAt = Date.parse(backup.createdAt) + backup.durationMs
    this.lastSuccess.set(finishedAt / 1000)
    this.lastDuration.set(backup.durationMs / 1000)
    this.lastSize.set(backup.sizeBytes)
  }
}
