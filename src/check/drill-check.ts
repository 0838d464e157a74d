import {scanWithDrills} from '../drill/result'
import type {StorageBackend} from '../storage/contract'
import {CheckResult, evaluate} from './checks'

/**
 * The drill check of `dbb check`: the last passed restore drill of a logical backup is at most
 * DRILL_MAX_AGE old, and no drill after it failed. "not-configured" (does not fail) while no
 * drill was ever run, like the base backup and WAL checks before their first object.
 */
export async function drillCheck(storage: StorageBackend, options: {prefix: string; maxAgeMs: number; now: Date}): Promise<CheckResult> {
  const {drills} = await scanWithDrills(storage, {prefix: options.prefix, type: 'logical'})
  const finished = [...drills]
    .filter(([, drill]) => drill.finishedAt !== undefined && (drill.status === 'passed' || drill.status === 'failed'))
    .map(([id, drill]) => ({id, status: drill.status, at: new Date(drill.finishedAt!)}))
    .sort((a, b) => b.at.getTime() - a.at.getTime())
  if (finished.length === 0) {
    return {name: 'drill', status: 'not-configured', newest: null, newestAt: null, ageSeconds: null, maxAgeSeconds: null, message: 'not configured: no restore drill was ever run (dbb drill, or DRILL_INTERVAL for dbb serve)'}
  }

  const passed = finished.find((drill) => drill.status === 'passed')
  const result = evaluate('drill', true, passed && {name: passed.id, at: passed.at}, options.maxAgeMs, options.now, 'passed restore drill')
  const [latest] = finished
  if (latest.status === 'failed') return {...result, status: 'fail', message: `${result.message}; the latest drill (of ${latest.id}, ${latest.at.toISOString()}) failed`}
  return result
}
