import {fastInvocation} from '../../src/wal/fast-cli'
import {nextSegmentNames, queueDirFor} from '../../src/wal/prefetch'

describe('the archive_command / restore_command fast path (src/wal/fast-cli.ts)', () => {
  it('takes exactly the forms PostgreSQL runs, with built-in backends', () => {
    expect(fastInvocation(['wal', 'push', 'pg_wal/000000010000000000000003'], {})).toEqual({command: 'push', path: 'pg_wal/000000010000000000000003', async: false})
    expect(fastInvocation(['wal', 'push', '--async', 'pg_wal/X'], {STORAGE_BACKEND: 's3'})).toEqual({command: 'push', path: 'pg_wal/X', async: true})
    expect(fastInvocation(['wal', 'fetch', '000000010000000000000003', 'pg_wal/RECOVERYXLOG'], {STORAGE_BACKEND: ''})).toEqual({
      command: 'fetch',
      name: '000000010000000000000003',
      dest: 'pg_wal/RECOVERYXLOG',
    })
    expect(fastInvocation(['wal', 'spool-upload', '/data/pg_wal'], {})).toEqual({command: 'spool-upload', walDir: '/data/pg_wal'})
    expect(fastInvocation(['wal', 'prefetch', '000000010000000000000003', '16777216'], {})).toEqual({command: 'prefetch', name: '000000010000000000000003', segmentSize: 16_777_216})
  })

  it('leaves everything else to oclif: flags, --help, --json, other commands, third-party backends', () => {
    expect(fastInvocation(['wal', 'push', '--local-dir', '/x', 'pg_wal/X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push', '--json', 'pg_wal/X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push', '--help'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', 'X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', 'X', 'Y', '--storage', 'local'], {})).toBeUndefined()
    expect(fastInvocation(['backup', 'run'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push', 'pg_wal/X'], {STORAGE_BACKEND: 'azure'})).toBeUndefined()
    expect(fastInvocation(['wal', 'prefetch', 'X', 'big'], {})).toBeUndefined()
  })
})

describe('prefetch naming (src/wal/prefetch.ts)', () => {
  it('names the following segments on the same timeline, across a log boundary, for the segment size', () => {
    expect(nextSegmentNames('0000000200000001000000FE', 3, 16 * 1024 * 1024)).toEqual(['0000000200000001000000FF', '000000020000000200000000', '000000020000000200000001'])
    // 1 GiB segments: 4 per 4 GiB "log".
    expect(nextSegmentNames('000000010000000000000003', 2, 1024 ** 3)).toEqual(['000000010000000100000000', '000000010000000100000001'])
    expect(nextSegmentNames('00000002.history', 3, 16 * 1024 * 1024)).toEqual([])
  })

  it('keys the queue by archive', () => {
    expect(queueDirFor('/spool', '/var/backups/a')).not.toBe(queueDirFor('/spool', '/var/backups/b'))
    expect(queueDirFor('/spool', 's3://bucket/x')).toMatch(/^\/spool\/fetch-queue\/[0-9a-f]{16}$/)
  })
})
