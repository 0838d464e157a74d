import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {passwordFromPassfile} from '../../src/db/pgpass'

describe('passwordFromPassfile', () => {
  let file: string
  beforeAll(async () => {
    file = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'pgpass-')), 'pgpass')
    await fs.writeFile(
      file,
      ['# comment', 'db.internal:5432:app:alice:first', '*:*:*:bob:with\\:colon\\\\and-backslash', 'db.internal:*:*:*:fallback', ''].join('\n'),
    )
  })

  const target = {host: 'db.internal', port: 5432, database: 'app', user: 'alice'}

  it('returns the first matching line', async () => expect(await passwordFromPassfile(file, target)).toBe('first'))
  it('honours wildcards and escapes', async () =>
    expect(await passwordFromPassfile(file, {...target, host: 'elsewhere', user: 'bob'})).toBe('with:colon\\and-backslash'))
  it('falls through to a later wildcard line', async () => expect(await passwordFromPassfile(file, {...target, user: 'carol'})).toBe('fallback'))
  it('returns undefined when nothing matches', async () =>
    expect(await passwordFromPassfile(file, {...target, host: 'other', user: 'carol'})).toBeUndefined())
})
