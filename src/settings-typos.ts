/**
 * Environment variables that look like a misspelt setting (`DB_PASWORD`, `RETENTION_DAY`,
 * `db_host`): dbb would run with the default and say nothing, so the base command warns, naming
 * the variable and the setting it is close to (never its value). Near means one edit for a short
 * name, two for one of 8 characters or more, ignoring case; names under 5 characters are left
 * alone (too many unrelated variables are that close to `TZ` or `HOME`).
 */
export function misspeltSettings(env: NodeJS.ProcessEnv, known: readonly string[]): {variable: string; suggestion: string}[] {
  const exact = new Set(known)
  const candidates = known.filter((name) => name.length >= 5)
  const found: {variable: string; suggestion: string}[] = []
  for (const variable of Object.keys(env).sort()) {
    if (exact.has(variable) || variable.length < 5) continue
    const upper = variable.toUpperCase()
    let best: {name: string; distance: number} | undefined
    for (const name of candidates) {
      const limit = name.length >= 8 ? 2 : 1
      const distance = distanceWithin(upper, name, limit)
      if (distance <= limit && (best === undefined || distance < best.distance)) best = {name, distance}
    }

    if (best) found.push({variable, suggestion: best.name})
  }

  return found
}

/**
 * The edit distance of `a` and `b` when it is at most `limit`, else `limit + 1`. This runs at
 * every command's start over every variable × every setting name, so it stops as soon as the
 * answer is "too far" (a length difference beyond the limit, or a row of the table whose smallest
 * entry is): most pairs are ruled out after a row or two, which the full Levenshtein table is not.
 */
export function distanceWithin(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1
  let previous = Array.from({length: b.length + 1}, (_, index) => index)
  let current = new Array<number>(b.length + 1)
  for (let i = 1; i <= a.length; i++) {
    current[0] = i
    let rowMin = i
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (current[j] < rowMin) rowMin = current[j]
    }

    if (rowMin > limit) return limit + 1
    ;[previous, current] = [current, previous]
  }

  return Math.min(previous[b.length], limit + 1)
}
