/**
 * Tiered retention: BACKUP_KEEP_DAYS, BACKUP_KEEP_WEEKS, BACKUP_KEEP_MONTHS, with the semantics of
 * prodrigestivill/postgres-backup-local (its backup.sh and README "How the backups folder works?"):
 *
 * - each tier keeps the NEWEST backup of each period: UTC day (`YYYY-MM-DD`), ISO week (`GGGG-Www`,
 *   Monday to Sunday, as `date +%G%V`), calendar month (`YYYY-MM`);
 * - that backup is kept while its age in whole days (`find -mtime +N`: floor(age / 24 h) ≤ N) is at
 *   most N for days, N × 7 + 1 for weeks and N × 31 + 1 for months. Ages count from the newest
 *   backup of the period ("it starts counting from the end of each week not the beginning").
 *
 * Tiers only keep: a backup one of them keeps is never expired by RETENTION_DAYS or
 * BACKUPS_TO_RETAIN. Pure, so the rules are unit-tested over synthetic years of history.
 * Periods are UTC (prodrigestivill uses the container's TZ; a backup taken at 00:30 local time
 * belongs to the previous UTC day here).
 */
export interface RetentionTiers {
  /** BACKUP_KEEP_DAYS: the newest backup of each of the last N days; unset or 0: off. */
  keepDays?: number
  /** BACKUP_KEEP_WEEKS: the newest backup of each ISO week, for N × 7 + 1 days; unset or 0: off. */
  keepWeeks?: number
  /** BACKUP_KEEP_MONTHS: the newest backup of each month, for N × 31 + 1 days; unset or 0: off. */
  keepMonths?: number
}

const DAY_MS = 24 * 3600 * 1000

interface Tier {
  setting: 'BACKUP_KEEP_DAYS' | 'BACKUP_KEEP_WEEKS' | 'BACKUP_KEEP_MONTHS'
  noun: string
  /** The most whole days the newest backup of a period may be old. */
  maxAgeDays: (count: number) => number
  period: (date: Date) => string
  count: (tiers: RetentionTiers) => number | undefined
}

const TIERS: Tier[] = [
  {setting: 'BACKUP_KEEP_DAYS', noun: 'day', maxAgeDays: (n) => n, period: utcDay, count: (tiers) => tiers.keepDays},
  {setting: 'BACKUP_KEEP_WEEKS', noun: 'week', maxAgeDays: (n) => n * 7 + 1, period: isoWeek, count: (tiers) => tiers.keepWeeks},
  {setting: 'BACKUP_KEEP_MONTHS', noun: 'month', maxAgeDays: (n) => n * 31 + 1, period: utcMonth, count: (tiers) => tiers.keepMonths},
]

export function tiersEnabled(tiers: RetentionTiers): boolean {
  return TIERS.some((tier) => (tier.count(tiers) ?? 0) > 0)
}

/**
 * For the backups of one kind (one prefix, one type), the reasons each backup is kept by a tier,
 * keyed by id; backups no tier keeps are absent.
 */
export function tierKeepReasons(backups: {id: string; createdAt: string}[], tiers: RetentionTiers, now: Date): Map<string, string[]> {
  const reasons = new Map<string, string[]>()
  for (const tier of TIERS) {
    const count = tier.count(tiers) ?? 0
    if (count <= 0) continue
    const newestOfPeriod = new Map<string, {id: string; createdAt: string}>()
    for (const backup of backups) {
      const period = tier.period(new Date(backup.createdAt))
      const current = newestOfPeriod.get(period)
      if (!current || backup.createdAt > current.createdAt || (backup.createdAt === current.createdAt && backup.id > current.id)) {
        newestOfPeriod.set(period, backup)
      }
    }

    for (const [period, backup] of newestOfPeriod) {
      const ageDays = Math.floor((now.getTime() - Date.parse(backup.createdAt)) / DAY_MS)
      if (ageDays > tier.maxAgeDays(count)) continue
      const list = reasons.get(backup.id) ?? []
      list.push(`newest of ${tier.noun} ${period} (${tier.setting}=${count})`)
      reasons.set(backup.id, list)
    }
  }

  return reasons
}

function utcDay(date: Date): string {
  return date.toISOString().slice(0, 10)
}

function utcMonth(date: Date): string {
  return date.toISOString().slice(0, 7)
}

/** ISO 8601 week (`date +%G-W%V`): weeks start on Monday; week 1 holds the year's first Thursday. */
export function isoWeek(date: Date): string {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()))
  const weekday = day.getUTCDay() || 7
  // The Thursday of this week decides the ISO year.
  day.setUTCDate(day.getUTCDate() + 4 - weekday)
  const year = day.getUTCFullYear()
  const week = Math.ceil(((day.getTime() - Date.UTC(year, 0, 1)) / DAY_MS + 1) / 7)
  return `${year}-W${String(week).padStart(2, '0')}`
}
