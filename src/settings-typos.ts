import {levenshtein} from './hooks/command-not-found'

/**
 * Environment variables that look like a misspelt setting (`DB_PASWORD`, `RETENTION_DAY`,
 * `db_host`): dbb would run with the default and say nothing, so the base command warns, naming
 * the variable and the setting it is close to (never its value). Near means one edit for a short
 * name, two for one of 8 characters or more, ignoring case; names under 5 characters are left
 * alone (too many unrelated variables are that close to `TZ` or `HOME`).
 */
export function misspeltSettings(env: NodeJS.ProcessEnv, known: readonly string[]): {variable: string; suggestion: string}[] {
  const exact = new Set(known)
  const found: {variable: string; suggestion: string}[] = []
  for (const variable of Object.keys(env).sort()) {
    if (exact.has(variable) || variable.length < 5) continue
    const upper = variable.toUpperCase()
    let best: {name: string; distance: number} | undefined
    for (const name of known) {
      if (name.length < 5) continue
      const distance = levenshtein(upper, name)
      if (distance <= (name.length >= 8 ? 2 : 1) && (best === undefined || distance < best.distance)) best = {name, distance}
    }

    if (best) found.push({variable, suggestion: best.name})
  }

  return found
}
