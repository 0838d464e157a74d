import * as fs from 'node:fs/promises'

import {prune} from '../../src/backup/prune'
import {listBackups} from '../../src/backup/metadata'
import {isoWeek} from '../../src/backup/retention-tiers'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {runCli, tempDir} from '../helpers/cli'
import {writeLocalBackup} from '../helpers/fake-backups'

const DAY = 86_400_000
// A Saturday: the current ISO week (2026-W47) runs Monday 16 to Sunday 22 November.
const NOW = new Date('2026-11-21T12:00:00Z')

/** One backup a day at 03:00 UTC for `days` days up to NOW's day, plus an earlier one on 20 November. */
async function history(dir: string, days: number): Promise<string[]> {
  const ids: string[] = []
  const today = Date.UTC(2026, 10, 21, 3)
  for (let age = 0; age < days; age++) ids.push((await writeLocalBackup(dir, new Date(today - age * DAY))).id)
  ids.push((await writeLocalBackup(dir, new Date(Date.UTC(2026, 10, 20, 1)))).id)
  return ids
}

const idOn = (date: string) => `backup_${date.replace(/-/g, '')}T030000Z.sql.gz`

describe('tiered retention (BACKUP_KEEP_DAYS/WEEKS/MONTHS) over a 400-day history, real local storage', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it("keeps exactly prodrigestivill's set: the newest of each of the last 7+1 days, 4 weeks (29 days), 6 months (187 days)", async () => {
    await history(dir, 400)
    const storage = new LocalBackend(dir)
    const rules = {retentionDays: 1, orphanGraceMs: DAY, keepDays: 7, keepWeeks: 4, keepMonths: 6}

    const dry = await prune(storage, {prefix: 'backup', rules, dryRun: true, now: NOW})
    const result = await prune(storage, {prefix: 'backup', rules, now: NOW})

    // Days: 03:00 on 14..21 November are 7 d 9 h .. 9 h old (find -mtime +7 spares whole ages 0..7).
    const daily = ['2026-11-14', '2026-11-15', '2026-11-16', '2026-11-17', '2026-11-18', '2026-11-19', '2026-11-20', '2026-11-21']
    // Weeks: each ISO week's Sunday (its newest) while at most 29 whole days old; the current week's newest is today.
    const weekly = ['2026-10-25', '2026-11-01', '2026-11-08']
    // Months: each month's last day while at most 187 whole days old (31 May is 174 days, 30 April 205).
    const monthly = ['2026-05-31', '2026-06-30', '2026-07-31', '2026-08-31', '2026-09-30', '2026-10-31']
    const expected = [...daily, ...weekly, ...monthly].map(idOn).sort()
    const remaining = (await listBackups(storage)).map((backup) => backup.id).sort()
    expect(remaining).toEqual(expected)
    expect(result.keptBackups.map((entry) => entry.id).sort()).toEqual(expected)
    expect(result.deleted.filter((entry) => entry.kind === 'backup')).toHaveLength(401 - expected.length)
    // The dry run decided the same, and deleted nothing itself.
    expect(dry.deleted.filter((entry) => entry.kind === 'backup').map((entry) => entry.id).sort()).toEqual(result.deleted.filter((entry) => entry.kind === 'backup').map((entry) => entry.id).sort())

    const because = Object.fromEntries(dry.keptBackups.map((entry) => [entry.id, entry.reasons]))
    expect(because[idOn('2026-11-21')]).toEqual([
      'newest complete logical backup (never deleted)',
      'newest of day 2026-11-21 (BACKUP_KEEP_DAYS=7)',
      'newest of week 2026-W47 (BACKUP_KEEP_WEEKS=4)',
      'newest of month 2026-11 (BACKUP_KEEP_MONTHS=6)',
    ])
    expect(because[idOn('2026-11-15')]).toEqual(['newest of day 2026-11-15 (BACKUP_KEEP_DAYS=7)', 'newest of week 2026-W46 (BACKUP_KEEP_WEEKS=4)'])
    expect(because[idOn('2026-05-31')]).toEqual(['newest of month 2026-05 (BACKUP_KEEP_MONTHS=6)'])
    // The earlier backup of 20 November is not its day's newest, and older than RETENTION_DAYS.
    expect(dry.deleted.find((entry) => entry.id === 'backup_20261120T010000Z.sql.gz')?.reason).toBe('older than 1 days (RETENTION_DAYS)')
  })

  it('never deletes the newest successful backup, even when every tier has let it go', async () => {
    const old = await writeLocalBackup(dir, new Date(NOW.getTime() - 500 * DAY))
    await writeLocalBackup(dir, new Date(NOW.getTime() - 501 * DAY))
    const storage = new LocalBackend(dir)
    const result = await prune(storage, {prefix: 'backup', rules: {retentionDays: 1, orphanGraceMs: DAY, keepDays: 7, keepWeeks: 4, keepMonths: 6}, now: NOW})
    expect((await listBackups(storage)).map((backup) => backup.id)).toEqual([old.id])
    expect(result.keptBackups).toEqual([{id: old.id, reasons: ['newest complete logical backup (never deleted)']}])
  })

  it('applies per name prefix: one database history never keeps or expires another', async () => {
    for (let age = 0; age < 40; age++) {
      await writeLocalBackup(dir, new Date(NOW.getTime() - age * DAY - 3600_000), {prefix: 'backup_app'})
    }
    const billing = await writeLocalBackup(dir, new Date(NOW.getTime() - 300 * DAY), {prefix: 'backup_billing'})
    const storage = new LocalBackend(dir)
    await prune(storage, {prefix: 'backup_app', rules: {retentionDays: 1, orphanGraceMs: DAY, keepWeeks: 2}, now: NOW})
    const left = (await listBackups(storage)).map((backup) => backup.id)
    expect(left).toContain(billing.id)
    // Two weeks = 15 days: today's week (newest today) and the Sundays 15 and 8 November.
    expect(left.filter((id) => id.startsWith('backup_app_')).sort()).toEqual(
      ['backup_app_20261108T110000Z.sql.gz', 'backup_app_20261115T110000Z.sql.gz', 'backup_app_20261121T110000Z.sql.gz'].sort(),
    )
  })

  it('ISO weeks as date +%G-W%V: across year ends', () => {
    expect(isoWeek(new Date('2021-01-03T23:00:00Z'))).toBe('2020-W53')
    expect(isoWeek(new Date('2021-01-04T00:00:00Z'))).toBe('2021-W01')
    expect(isoWeek(new Date('2024-12-30T12:00:00Z'))).toBe('2025-W01')
    expect(isoWeek(new Date('2026-11-22T23:59:59Z'))).toBe('2026-W47')
  })

  it('prune --dry-run --json explains what keeps each backup; a bad BACKUP_KEEP_WEEKS exits 2', async () => {
    const now = Date.now()
    const newest = await writeLocalBackup(dir, new Date(now - 3600_000))
    const weekOld = await writeLocalBackup(dir, new Date(now - 10 * DAY))
    const gone = await writeLocalBackup(dir, new Date(now - 400 * DAY))
    const env = {BACKUP_LOCAL_DIR: dir, RETENTION_DAYS: '3', BACKUP_KEEP_WEEKS: '4'}
    const result = await runCli(['prune', '--dry-run', '--json'], env)
    expect(result.code).toBe(0)
    const json = JSON.parse(result.stdout) as {keptBackups: {id: string; reasons: string[]}[]; deleted: {id: string}[]}
    const because = Object.fromEntries(json.keptBackups.map((entry) => [entry.id, entry.reasons]))
    expect(because[newest.id][0]).toBe('newest complete logical backup (never deleted)')
    expect(because[weekOld.id]).toEqual([`newest of week ${isoWeek(new Date(now - 10 * DAY))} (BACKUP_KEEP_WEEKS=4)`])
    expect(json.deleted.map((entry) => entry.id)).toEqual([gone.id])
    expect((await fs.readdir(dir)).filter((name) => name === gone.id)).toHaveLength(1)

    const bad = await runCli(['prune', '--dry-run'], {...env, BACKUP_KEEP_WEEKS: 'four'})
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('BACKUP_KEEP_WEEKS')
  })
})
