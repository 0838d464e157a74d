import {describeS3Error, networkErrorCode} from '../../src/plugins/s3/src/errors'
import {DEFAULT_PART_SIZE, parseByteSize, parseS3Settings} from '../../src/plugins/s3/src/settings'

const issuesOf = (settings: Record<string, string>) => {
  try {
    parseS3Settings(settings)
  } catch (error) {
    return (error as {name: string; issues: {variable: string; message: string; example?: string}[]}).issues
  }

  throw new Error('expected a StorageConfigError')
}

describe('s3 settings', () => {
  it('applies the documented defaults; path-style only with a custom endpoint', () => {
    expect(parseS3Settings({S3_BUCKET: 'backups-prod'})).toEqual({
      bucket: 'backups-prod',
      prefix: 'backups',
      endpoint: undefined,
      forcePathStyle: false,
      region: 'eu-central-1',
      credentials: undefined,
      storageClass: undefined,
      sse: undefined,
      sseKmsKeyId: undefined,
      partSize: DEFAULT_PART_SIZE,
      concurrency: 4,
      checksums: 'WHEN_REQUIRED',
      conditionalWrites: true,
      connectTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
    })
    const minio = parseS3Settings({S3_BUCKET: 'b1b', S3_ENDPOINT: 'http://minio:9000/', AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's'})
    expect(minio).toMatchObject({endpoint: 'http://minio:9000', forcePathStyle: true, credentials: {accessKeyId: 'k', secretAccessKey: 's'}})
    expect(parseS3Settings({S3_BUCKET: 'b1b', S3_ENDPOINT: 'https://r2.example', S3_FORCE_PATH_STYLE: 'false'}).forcePathStyle).toBe(false)
  })

  it('reads prefixes, sizes, encryption and checksum modes', () => {
    const options = parseS3Settings({
      S3_BUCKET: 'b1b',
      S3_PREFIX: '/prod/app/',
      S3_PART_SIZE: '64MiB',
      S3_UPLOAD_CONCURRENCY: '8',
      S3_SSE: 'aws:kms',
      S3_SSE_KMS_KEY_ID: 'alias/backups',
      S3_STORAGE_CLASS: 'STANDARD_IA',
      S3_CHECKSUMS: 'WHEN_SUPPORTED',
    })
    expect(options).toMatchObject({prefix: 'prod/app', partSize: 64 * 1024 * 1024, concurrency: 8, sse: 'aws:kms', sseKmsKeyId: 'alias/backups'})
    expect(options.checksums).toBe('WHEN_SUPPORTED')
    expect(parseS3Settings({S3_BUCKET: 'b1b', S3_PREFIX: '/'}).prefix).toBe('')
    expect(parseS3Settings({S3_BUCKET: 'b1b', S3_CONDITIONAL_WRITES: 'false'}).conditionalWrites).toBe(false)
    expect(parseByteSize('8388608')).toBe(8 * 1024 * 1024)
    expect(parseByteSize('1.5 GiB')).toBe(1.5 * 1024 ** 3)
    expect(parseByteSize('100MB')).toBe(100_000_000)
    expect(parseByteSize('lots')).toBeUndefined()
  })

  it('reports every bad variable at once, with an example', () => {
    const issues = issuesOf({
      S3_PREFIX: 'a/../b',
      S3_ENDPOINT: 'http://user:pass@minio:9000',
      S3_FORCE_PATH_STYLE: 'maybe',
      AWS_SECRET_ACCESS_KEY: 'secret-value',
      S3_SSE_KMS_KEY_ID: 'alias/x',
      S3_PART_SIZE: '6GiB',
      S3_UPLOAD_CONCURRENCY: '0',
      S3_CHECKSUMS: 'always',
      S3_STORAGE_CLASS: 'cheap please',
    })
    expect(issues.map((issue) => issue.variable)).toEqual([
      'S3_BUCKET',
      'S3_PREFIX',
      'S3_ENDPOINT',
      'S3_FORCE_PATH_STYLE',
      'AWS_ACCESS_KEY_ID',
      'S3_STORAGE_CLASS',
      'S3_SSE_KMS_KEY_ID',
      'S3_PART_SIZE',
      'S3_UPLOAD_CONCURRENCY',
      'S3_CHECKSUMS',
    ])
    expect(issues[0]).toEqual({variable: 'S3_BUCKET', message: 'is required with STORAGE_BACKEND=s3', example: 'my-db-backups'})
    expect(issues[2].message).toMatch(/must not contain credentials/)
    expect(JSON.stringify(issues)).not.toContain('secret-value')
    expect(JSON.stringify(issues)).not.toContain('pass@')
  })
})

describe('s3 error messages', () => {
  const context = {bucket: 'b1b', endpoint: 'http://minio:9000', action: 'upload of backups/x'}
  const sdkError = (name: string, status: number, message = name) => Object.assign(new Error(message), {name, $metadata: {httpStatusCode: status}})

  it.each([
    ['a missing bucket', sdkError('NoSuchBucket', 404), 'upload of backups/x failed: bucket "b1b" does not exist at http://minio:9000 (create it, or check S3_BUCKET and S3_ENDPOINT)'],
    ['a bodiless 404 on HeadBucket', sdkError('NotFound', 404), 'bucket "b1b" does not exist at http://minio:9000'],
    ['an unknown access key', sdkError('InvalidAccessKeyId', 403), 'the access key is not known to http://minio:9000 (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID'],
    ['a wrong secret', sdkError('SignatureDoesNotMatch', 403), 'rejected the request signature (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY'],
    ['a bodiless 403', sdkError('403', 403, 'UnknownError'), 'access denied to bucket "b1b" at http://minio:9000 (HTTP 403)'],
    ['a bucket in another region', sdkError('PermanentRedirect', 301), 'in another region than AWS_DEFAULT_REGION'],
    ['any other S3 error', sdkError('SlowDown', 503, 'Reduce your request rate.'), 'SlowDown: Reduce your request rate. (HTTP 503) from http://minio:9000'],
    ['no credentials in the default chain', Object.assign(new Error('Could not load credentials from any providers'), {name: 'CredentialsProviderError'}), 'no AWS credentials found'],
    ['a refused connection', Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:9000'), {code: 'ECONNREFUSED'}), 'cannot reach the S3 endpoint http://minio:9000: connection refused (ECONNREFUSED)'],
    ['an unknown host inside an AggregateError', new AggregateError([Object.assign(new Error('x'), {code: 'ENOTFOUND'})]), 'host name not found (ENOTFOUND)'],
    ['a connect timeout', Object.assign(new Error('Connection timed out after 5000 ms'), {name: 'TimeoutError'}), 'connection timed out (ETIMEDOUT)'],
  ])('%s', (_label, error, expected) => {
    const described = describeS3Error(error, context)
    expect(described.message).toContain(expected)
    expect(described.cause).toBe(error)
  })

  it('finds network codes flattened into a message (errors crossing realms)', () => {
    expect(networkErrorCode(new Error('AWS SDK error wrapper for Error: connect ECONNREFUSED 127.0.0.1:1'))).toBe('ECONNREFUSED')
    expect(networkErrorCode(new Error('EACCES: permission denied'))).toBeUndefined()
  })
})
