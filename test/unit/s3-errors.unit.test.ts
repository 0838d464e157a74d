import {describeS3Error} from '../../src/plugins/s3/src/errors'
import {parseDuration, parseS3Settings} from '../../src/plugins/s3/src/settings'
import {isSmallBookkeepingKey} from '../../src/plugins/s3/src/upload'

const context = {bucket: 'dbb-test', endpoint: 'http://127.0.0.1:9000', action: 'upload of backups/x.sql.gz', connectTimeoutMs: 10_000, requestTimeoutMs: 30_000}
const sdkError = (name: string, status: number, message = name) => Object.assign(new Error(message), {name, $metadata: {httpStatusCode: status}})

describe('S3 error messages name the likely cause', () => {
  it('a bare InvalidRequest on a write names S3_SSE / S3_STORAGE_CLASS when they are set', () => {
    const error = sdkError('InvalidRequest', 400, 'InvalidRequest')
    expect(describeS3Error(error, {...context, sse: 'AES256'}).message).toBe(
      'upload of backups/x.sql.gz failed: InvalidRequest (HTTP 400) from http://127.0.0.1:9000; the store may not support S3_SSE=AES256: unset it and try again',
    )
    expect(describeS3Error(error, {...context, sse: 'AES256', storageClass: 'STANDARD_IA'}).message).toContain(
      'the store may not support S3_SSE=AES256 or S3_STORAGE_CLASS=STANDARD_IA: unset them',
    )
    expect(describeS3Error(error, context).message).toBe('upload of backups/x.sql.gz failed: InvalidRequest (HTTP 400) from http://127.0.0.1:9000')
  })

  it('a connection that breaks says the connection to storage was lost, where, and after how many bytes', () => {
    const reset = Object.assign(new Error('read ECONNRESET'), {code: 'ECONNRESET'})
    expect(describeS3Error(reset, {...context, bytesTransferred: 3_145_728}).message).toBe(
      'upload of backups/x.sql.gz failed: the connection to storage was lost after 3,145,728 bytes: the S3 endpoint http://127.0.0.1:9000 closed it (connection reset, ECONNRESET); check the endpoint\'s health and the network',
    )
  })

  it('QuotaExceeded says what to do', () => {
    expect(describeS3Error(sdkError('QuotaExceeded', 403), context).message).toBe(
      'upload of backups/x.sql.gz failed: the storage quota of bucket "dbb-test" at http://127.0.0.1:9000 is exceeded (QuotaExceeded); free space (dbb prune, a lower BACKUPS_TO_RETAIN) or raise the quota',
    )
  })

  it('a failed virtual-host lookup names the host that failed, not the endpoint\'s', () => {
    const lookup = Object.assign(new Error('getaddrinfo ENOTFOUND dbb-test.localhost'), {code: 'ENOTFOUND', hostname: 'dbb-test.localhost'})
    expect(describeS3Error(lookup, {...context, endpoint: 'http://localhost:9000'}).message).toBe(
      'upload of backups/x.sql.gz failed: cannot reach the S3 endpoint http://localhost:9000: the host name dbb-test.localhost (the bucket as a subdomain, virtual-hosted style) was not found (ENOTFOUND); set S3_FORCE_PATH_STYLE=true, or make dbb-test.localhost resolve',
    )
  })

  it('timeouts say which bound was hit and which setting sets it', () => {
    const silence = Object.assign(new Error('@smithy/node-http-handler - the request socket timed out after 30000 ms of inactivity (configured by client requestHandler).'), {
      name: 'TimeoutError',
    })
    expect(describeS3Error(silence, context).message).toBe(
      'upload of backups/x.sql.gz failed: the S3 endpoint http://127.0.0.1:9000 stopped answering: nothing received for 30 s (S3_REQUEST_TIMEOUT, each attempt); the gateway is hung or overloaded',
    )
    const connect = Object.assign(
      new Error('@smithy/node-http-handler - the request socket did not establish a connection with the server within the configured timeout of 10000 ms.'),
      {name: 'TimeoutError'},
    )
    expect(describeS3Error(connect, context).message).toContain('no connection within 10 s (S3_CONNECT_TIMEOUT)')
  })
})

describe('S3 time-bound settings', () => {
  it('parses durations and rejects unreadable or out-of-range ones by name', () => {
    expect([parseDuration('10s'), parseDuration('500ms'), parseDuration('2m'), parseDuration('45'), parseDuration('soon')]).toEqual([10_000, 500, 120_000, 45_000, undefined])
    expect(parseS3Settings({S3_BUCKET: 'bk'})).toMatchObject({connectTimeoutMs: 10_000, requestTimeoutMs: 30_000})
    expect(() => parseS3Settings({S3_BUCKET: 'bk', S3_CONNECT_TIMEOUT: 'soon', S3_REQUEST_TIMEOUT: '0s'})).toThrow(
      /S3_CONNECT_TIMEOUT: must be a duration from 100ms to 10m, such as 10s\nS3_REQUEST_TIMEOUT: must be a duration from 100ms to 1h, such as 30s/,
    )
  })
})

describe('S3_STORAGE_CLASS applies to data, not to bookkeeping', () => {
  it('id claims and sidecars are bookkeeping; dumps, base backups and WAL are not', () => {
    expect(isSmallBookkeepingKey('backups/backup_20261121T030000Z.sql.gz.0123456789abcdef.partial')).toBe(true)
    expect(isSmallBookkeepingKey('backups/backup_20261121T030000Z.sql.gz.meta.json')).toBe(true)
    expect(isSmallBookkeepingKey('backups/backup_20261121T030000Z.sql.gz')).toBe(false)
    expect(isSmallBookkeepingKey('backups/wal/000000010000000000000001.gz')).toBe(false)
  })
})
