import {levenshtein} from '../../src/hooks/command-not-found'
import {distanceWithin, misspeltSettings} from '../../src/settings-typos'

describe('distanceWithin: the edit distance when it is within the limit, cut short otherwise', () => {
  // Deterministic pseudo-random names over a small alphabet, so near and far pairs both occur.
  let seed = 7
  const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31)
  const name = () => Array.from({length: 3 + (next() % 10)}, () => 'AB_DE'[next() % 5]).join('')
  const pairs = Array.from({length: 3000}, () => [name(), name()] as const)

  it.each([0, 1, 2, 3])('equals min(levenshtein, limit + 1) for 3000 pairs at limit %i', (limit) => {
    for (const [a, b] of pairs) expect(distanceWithin(a, b, limit)).toBe(Math.min(levenshtein(a, b), limit + 1))
  })

  it('misspeltSettings still names the setting a variable is close to (and only those)', () => {
    const env = {DB_PASWORD: 'x', RETENTION_DAY: '1', db_host: 'h', HOME: '/root', UNRELATED_THING: 'y', DB_PASSWORD: 'ok'}
    expect(misspeltSettings(env, ['DB_PASSWORD', 'RETENTION_DAYS', 'DB_HOST', 'TZ'])).toEqual([
      {variable: 'DB_PASWORD', suggestion: 'DB_PASSWORD'},
      {variable: 'RETENTION_DAY', suggestion: 'RETENTION_DAYS'},
      {variable: 'db_host', suggestion: 'DB_HOST'},
    ])
  })
})
