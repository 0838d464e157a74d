import type {DrillState} from '../drill/result'
import type {BackupMetadata} from './metadata'
import type {RetentionPlan} from './retention'

/**
 * The second safety floor of retention (next to "the newest complete backup is always kept"):
 * the newest backup whose restore drill passed is never deleted while a newer backup of its type
 * failed its drill — otherwise rotating out old backups could leave only backups proven not to
 * restore. Pure, applied to a plan planRetention made; a separate rule so retention policies
 * (ages, counts, tiers) stay independent of it.
 */
export function keepNewestPassedDrill(plan: RetentionPlan, drills: ReadonlyMap<string, DrillState>): RetentionPlan {
  const all = [...plan.keep, ...plan.expire.map(({backup}) => backup)]
  const rescued = new Set<string>()
  for (const type of new Set(all.map((backup) => backup.type))) {
    const ofType = all.filter((backup) => backup.type === type).sort(newestFirst)
    const passedIndex = ofType.findIndex((backup) => drills.get(backup.id) === 'passed')
    if (passedIndex <= 0) continue
    const newerFailed = ofType.slice(0, passedIndex).some((backup) => drills.get(backup.id) === 'failed')
    if (newerFailed) rescued.add(ofType[passedIndex].id)
  }

  if (rescued.size === 0) return plan
  return {
    ...plan,
    keep: [...plan.keep, ...plan.expire.filter(({backup}) => rescued.has(backup.id)).map(({backup}) => backup)],
    expire: plan.expire.filter(({backup}) => !rescued.has(backup.id)),
  }
}

function newestFirst(a: BackupMetadata, b: BackupMetadata): number {
  return b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id)
}
