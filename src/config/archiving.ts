import {z} from 'zod'

import {cronProblem, defineSection, duration, flag, intInRange, isTimeZone, scheduleInterval} from './fields'
import type {ScheduleConfig} from './server'

/** Sections of continuous archiving (src/wal, src/backup/base-backup.ts, src/check). */

export const baseBackup = defineSection(
  {
    BASE_BACKUP_WAL_METHOD: z.enum(['fetch', 'none'], {message: 'must be fetch or none'}).default('fetch'),
    BASE_BACKUP_CHECKPOINT: z.enum(['fast', 'spread'], {message: 'must be fast or spread'}).default('fast'),
  },
  (object) => object.transform((data) => ({walMethod: data.BASE_BACKUP_WAL_METHOD, checkpoint: data.BASE_BACKUP_CHECKPOINT})),
)

export const walStreaming = defineSection(
  {
    WAL_STREAMING: flag(false),
    WAL_STREAMING_SLOT: z
      .string()
      .regex(/^[a-z0-9_]{1,63}$/, {message: 'must be lowercase letters, digits and "_" (a replication slot name)'})
      .default('dbb'),
    WAL_STREAMING_DIR: z.string().optional(),
  },
  (object) => object.transform((data) => ({enabled: data.WAL_STREAMING, slot: data.WAL_STREAMING_SLOT, spoolDir: data.WAL_STREAMING_DIR})),
)

export const check = defineSection(
  {
    BASE_BACKUP_INTERVAL_MINUTES: intInRange(1, 5_256_000).default(10_080),
    CHECKPOINT_TIMEOUT_SECONDS: intInRange(1, 31_536_000).default(300),
    // Unset: checked once a base backup or archived WAL exists (a logical-only setup passes); true or false forces it.
    CHECK_BASE_BACKUP: z.stringbool({error: 'must be true or false'}).optional(),
    CHECK_WAL: z.stringbool({error: 'must be true or false'}).optional(),
    CHECK_LOGICAL_BACKUP: flag(true),
  },
  (object) =>
    object.transform((data) => ({
      baseBackupIntervalMs: data.BASE_BACKUP_INTERVAL_MINUTES * 60_000,
      checkpointTimeoutMs: data.CHECKPOINT_TIMEOUT_SECONDS * 1000,
      baseBackup: data.CHECK_BASE_BACKUP,
      wal: data.CHECK_WAL,
      logicalBackup: data.CHECK_LOGICAL_BACKUP,
    })),
)

/** `dbb serve`'s base backup schedule and check interval. */
export const archiving = defineSection(
  {
    BASE_BACKUP_INTERVAL: scheduleInterval.optional(),
    BASE_BACKUP_SCHEDULE: z.string().optional(),
    TZ: z.string().optional(),
    CHECK_INTERVAL: duration.optional(),
  },
  (object) =>
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
