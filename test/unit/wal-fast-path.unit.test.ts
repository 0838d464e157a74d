import {fastInvocation} from '../../src/wal/fast-cli'
import {queueDirFor, storageIdentity} from '../../src/wal/foreground'
import {nextSegmentNames} from '../../src/wal/prefetch'

describe('the archive_command / restore_command fast path (src/wal/fast-cli.ts)', () => {
  it('takes exactly the forms PostgreSQL runs, with built-in backends', () => {
    expect(fastInvocation(['wal', 'push', 'pg_wal/000000010000000000000003'], {})).toEqual({command: 'push', path: 'pg_wal/000000010000000000000003', async: false})
    expect(fastInvocation(['wal', 'push', '--async', 'pg_wal/X'], {STORAGE_BACKEND: 's3'})).toEqual({command: 'push', path: 'pg_wal/X', async: true})
    expect(fastInvocation(['wal', 'fetch', '000000010000000000000003', 'pg_wal/RECOVERYXLOG'], {STORAGE_BACKEND: ''})).toEqual({
      command: 'fetch',
      name: '000000010000000000000003',
      dest: 'pg_wal/RECOVERYXLOG',
      overrides: {},
    })
    // The restore_command dbb restore writes: storage settings as flags, which become their variables.
    expect(fastInvocation(['wal', 'fetch', '--storage', 'local', '--local-dir', '/backups', '000000010000000000000003', 'pg_wal/RECOVERYXLOG'], {})).toEqual({
      command: 'fetch',
      name: '000000010000000000000003',
      dest: 'pg_wal/RECOVERYXLOG',
      overrides: {STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: '/backups'},
    })
    expect(fastInvocation(['wal', 'fetch', '--storage=s3', '--s3-bucket', 'b', 'X', 'Y'], {})).toMatchObject({overrides: {STORAGE_BACKEND: 's3', S3_BUCKET: 'b'}})
    expect(fastInvocation(['wal', 'spool-upload', '/data/pg_wal'], {})).toEqual({command: 'spool-upload', walDir: '/data/pg_wal'})
    expect(fastInvocation(['wal', 'prefetch', '000000010000000000000003', '16777216'], {})).toEqual({command: 'prefetch', name: '000000010000000000000003', segmentSize: 16_777_216})
  })

  it('leaves everything else to oclif: flags, --help, --json, other commands, third-party backends', () => {
    expect(fastInvocation(['wal', 'push', '--local-dir', '/x', 'pg_wal/X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push', '--json', 'pg_wal/X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push', '--help'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'push'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', 'X'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', 'X', 'Y', '--json'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', '--local-dir'], {})).toBeUndefined()
    expect(fastInvocation(['wal', 'fetch', '--storage', 'azure', 'X', 'Y'], {})).toBeUndefined()
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

  it('keys the queue by the storage settings that say where WAL is read from', () => {
    const queue = (env: NodeJS.ProcessEnv) => queueDirFor('/spool', storageIdentity(env))
    expect(queue({BACKUP_LOCAL_DIR: '/var/backups/a'})).not.toBe(queue({BACKUP_LOCAL_DIR: '/var/backups/b'}))
    expect(queue({BACKUP_LOCAL_DIR: '/var/backups/a'})).toBe(queue({BACKUP_LOCAL_DIR: '/var/backups/a/', STORAGE_BACKEND: 'local', LOG_LEVEL: 'debug'}))
    expect(queue({STORAGE_BACKEND: 's3', S3_BUCKET: 'b', S3_PREFIX: 'x'})).not.toBe(queue({STORAGE_BACKEND: 's3', S3_BUCKET: 'b', S3_PREFIX: 'y'}))
    expect(queue({STORAGE_BACKEND: 's3', S3_BUCKET: 'b', S3_ENDPOINT: 'http://one'})).not.toBe(queue({STORAGE_BACKEND: 's3', S3_BUCKET: 'b', S3_ENDPOINT: 'http://two'}))
    expect(queue({STORAGE_BACKEND: 's3', S3_BUCKET: 'b'})).toMatch(/^\/spool\/fetch-queue\/[0-9a-f]{16}$/)
  })
})
