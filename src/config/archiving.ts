import {cronProblem, defineSection, isTimeZone} from './fields'
import type {ScheduleConfig} from './server'

/** Sections of continuous archiving (src/wal, src/backup/base-backup.ts, src/check). */

export const baseBackup = defineSection(['BASE_BACKUP_WAL_METHOD', 'BASE_BACKUP_CHECKPOINT'], (object) =>
  object.transform((data) => ({walMethod: data.BASE_BACKUP_WAL_METHOD, checkpoint: data.BASE_BACKUP_CHECKPOINT})),
)

export const walStreaming = defineSection(['WAL_STREAMING', 'WAL_STREAMING_SLOT', 'WAL_STREAMING_DIR'], (object) =>
  object.transform((data) => ({enabled: data.WAL_STREAMING, slot: data.WAL_STREAMING_SLOT, spoolDir: data.WAL_STREAMING_DIR})),
)

// CHECK_BASE_BACKUP, CHECK_WAL unset: checked once a base backup or archived WAL exists (a logical-only setup passes).
export const check = defineSection(['BASE_BACKUP_INTERVAL_MINUTES', 'CHECKPOINT_TIMEOUT_SECONDS', 'CHECK_BASE_BACKUP', 'CHECK_WAL', 'CHECK_LOGICAL_BACKUP'], (object) =>
  object.transform((data) => ({
    baseBackupIntervalMs: data.BASE_BACKUP_INTERVAL_MINUTES * 60_000,
    checkpointTimeoutMs: data.CHECKPOINT_TIMEOUT_SECONDS * 1000,
    baseBackup: data.CHECK_BASE_BACKUP,
    wal: data.CHECK_WAL,
    logicalBackup: data.CHECK_LOGICAL_BACKUP,
  })),
)

/** `dbb serve`'s base backup schedule and check interval. */
export const archiving = defineSection(['BASE_BACKUP_INTERVAL', 'BASE_BACKUP_SCHEDULE', 'TZ', 'CHECK_INTERVAL'], (object) =>
  object
    .superRefine((data, ctx) => {
      if (data.BASE_BACKUP_SCHEDULE === undefined) return
      if (data.BASE_BACKUP_INTERVAL !== undefined) {
        ctx.addIssue({code: 'custom', path: ['BASE_BACKUP_SCHEDULE'], message: 'cannot be combined with BASE_BACKUP_INTERVAL: set only one'})
        return
      }

      // Named here, or croner's complaint about the zone would be reported against BASE_BACKUP_SCHEDULE.
      if (data.TZ !== undefined && !isTimeZone(data.TZ)) {
        ctx.addIssue({code: 'custom', path: ['TZ'], message: 'is not an IANA time zone name'})
        return
      }

      const problem = cronProblem(data.BASE_BACKUP_SCHEDULE, data.TZ)
      if (problem) ctx.addIssue({code: 'custom', path: ['BASE_BACKUP_SCHEDULE'], message: problem})
    })
    .transform((data) => {
      let baseBackupSchedule: ScheduleConfig | undefined
      if (data.BASE_BACKUP_SCHEDULE !== undefined) baseBackupSchedule = {kind: 'cron', expression: data.BASE_BACKUP_SCHEDULE.trim(), timezone: data.TZ}
      else if (data.BASE_BACKUP_INTERVAL !== undefined) baseBackupSchedule = {kind: 'interval', intervalMs: data.BASE_BACKUP_INTERVAL}
      return {baseBackupSchedule, checkIntervalMs: data.CHECK_INTERVAL}
    }),
)
