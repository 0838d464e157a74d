import {defineSection, scheduleIssues, scheduleOf} from './fields'

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
    .superRefine((data, ctx) =>
      scheduleIssues({interval: data.BASE_BACKUP_INTERVAL, cron: data.BASE_BACKUP_SCHEDULE, timezone: data.TZ}, {interval: 'BASE_BACKUP_INTERVAL', cron: 'BASE_BACKUP_SCHEDULE'}, ctx),
    )
    .transform((data) => ({
      baseBackupSchedule: scheduleOf({interval: data.BASE_BACKUP_INTERVAL, cron: data.BASE_BACKUP_SCHEDULE, timezone: data.TZ}),
      checkIntervalMs: data.CHECK_INTERVAL,
    })),
)
