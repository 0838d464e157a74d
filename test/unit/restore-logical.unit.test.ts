import {checkDatabaseName, restoreDatabaseNames, restoreLockKey} from '../../src/restore/database'
import {PSQL_ARGS, psqlFailure, serverMessages} from '../../src/restore/import'

describe('restore: derived database names', () => {
  it('derives staging, replaced and previous names that fit in 63 bytes, cut on a character boundary, distinct per target', () => {
    const long = 'é'.repeat(31) // 62 bytes
    const names = restoreDatabaseNames(long)
    for (const name of [names.staging, names.replaced, names.previous]) {
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63)
      expect(name).not.toContain('\uFFFD')
    }

    expect(names.staging).toMatch(/^é+_dbb_staging_[0-9a-f]{8}$/)
    // Two targets sharing the kept prefix still differ.
    expect(restoreDatabaseNames(`${long}a`.slice(0, 31) + 'x').staging).not.toBe(restoreDatabaseNames(`${long.slice(0, 30)}y`).staging)
    expect(restoreDatabaseNames('shop')).toEqual({
      target: 'shop',
      staging: expect.stringMatching(/^shop_dbb_staging_[0-9a-f]{8}$/),
      replaced: expect.stringMatching(/^shop_dbb_replaced_[0-9a-f]{8}$/),
      previous: expect.stringMatching(/^shop_dbb_previous_[0-9a-f]{8}$/),
    })
    expect(restoreLockKey('shop')).toMatch(/^-?\d+$/)
    expect(restoreLockKey('shop')).not.toBe(restoreLockKey('shop2'))
  })

  it('refuses dbb\'s own reserved names as targets', () => {
    expect(() => checkDatabaseName(restoreDatabaseNames('shop').staging)).toThrow(/reserves/)
    expect(() => checkDatabaseName(restoreDatabaseNames('shop').previous)).toThrow(/reserves/)
    expect(checkDatabaseName('Ünïcødé "quoted"')).toBe('Ünïcødé "quoted"')
  })
})

describe('restore: psql without a wrapping transaction, PostgreSQL\'s own lines kept', () => {
  it('runs psql with ON_ERROR_STOP and --no-password, and without --single-transaction', () => {
    expect(PSQL_ARGS).toEqual(expect.arrayContaining(['--no-password', 'ON_ERROR_STOP=1']))
    expect(PSQL_ARGS).not.toContain('--single-transaction')
  })

  it('keeps DETAIL/HINT/CONTEXT with the error and the warnings before it (issue 11 hole 11)', () => {
    const stderr = [
      'psql:<stdin>:10: WARNING:  no privileges were granted for "x"',
      'psql:<stdin>:3300: ERROR:  out of shared memory',
      'HINT:  You might need to increase max_locks_per_transaction.',
      'CONTEXT:  SQL statement "CREATE TABLE t3300 (id int)"',
      '',
    ].join('\n')
    expect(psqlFailure({code: 3, signal: null}, stderr).message).toBe(
      [
        'psql:<stdin>:10: WARNING:  no privileges were granted for "x"',
        'psql:<stdin>:3300: ERROR:  out of shared memory',
        'HINT:  You might need to increase max_locks_per_transaction.',
        'CONTEXT:  SQL statement "CREATE TABLE t3300 (id int)"',
      ].join('\n'),
    )
    expect(serverMessages(stderr, 'WARNING')).toEqual(['psql:<stdin>:10: WARNING:  no privileges were granted for "x"'])
  })

  it('falls back to psql\'s own error line when the server said nothing', () => {
    expect(psqlFailure({code: 2, signal: null}, 'psql: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n').message).toMatch(/^psql: error: connection to server/)
  })
})
