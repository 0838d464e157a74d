import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {PassThrough} from 'node:stream'

import {ConfigError, errorMessage} from '../../src/errors'
import {createLogger} from '../../src/logger'
import {forgetSecrets, redactSecrets, registerSecret} from '../../src/secrets'
import {SettingSpec, setting, valuesByVariable} from '../../src/settings'

const pluginSecret: SettingSpec = {env: 'VAULTSTORE_KEY', flag: 'vaultstore-key', summary: 'Key', example: '<secret>', secret: true}
const specs: SettingSpec[] = [setting('DB_HOST'), setting('DB_PASSWORD'), setting('API_TOKEN'), setting('SLACK_WEBHOOK_URL'), pluginSecret]
const flagsOf = (values: Record<string, string>) => Object.fromEntries(specs.map((spec) => [spec.flag, values[spec.env]]))

function secretFile(content: string, mode = 0o444): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-secret-')), 'secret')
  fs.writeFileSync(file, content, {mode})
  return file
}

function issuesOf(run: () => unknown): string[] {
  try {
    run()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as ConfigError).message.split('\n')
  }

  throw new Error('expected a ConfigError')
}

afterEach(() => forgetSecrets())

describe('*_FILE for every secret setting (issue 18, item 3)', () => {
  it('reads X_FILE for core and plugin secrets, dropping one trailing newline', () => {
    const values = valuesByVariable(specs, flagsOf({DB_HOST: 'db'}), {
      DB_PASSWORD_FILE: secretFile('pa55word\n'),
      API_TOKEN_FILE: secretFile('token-with-two-newlines\n\n'),
      VAULTSTORE_KEY_FILE: secretFile('plugin-key\r\n'),
    })
    expect(values).toMatchObject({DB_HOST: 'db', DB_PASSWORD: 'pa55word', API_TOKEN: 'token-with-two-newlines\n', VAULTSTORE_KEY: 'plugin-key'})
  })

  it('is not honoured for settings that are not secret', () => {
    expect(valuesByVariable(specs, flagsOf({}), {DB_HOST_FILE: secretFile('db')}).DB_HOST).toBeUndefined()
  })

  it('refuses X and X_FILE together, an unreadable file and an empty one, naming X_FILE', () => {
    const issues = issuesOf(() =>
      valuesByVariable(specs, flagsOf({DB_PASSWORD: 'inline'}), {
        DB_PASSWORD_FILE: secretFile('x'),
        API_TOKEN_FILE: '/nonexistent/token',
        VAULTSTORE_KEY_FILE: secretFile('\n'),
      }),
    )
    expect(issues).toEqual([
      'DB_PASSWORD_FILE: is set together with DB_PASSWORD; set only one of them',
      expect.stringMatching(/^API_TOKEN_FILE: cannot read \/nonexistent\/token as .*: no such file \(ENOENT\)$/),
      expect.stringMatching(/^VAULTSTORE_KEY_FILE: .* is empty$/),
    ])
  })
})

describe('redaction of every declared secret, by key and by value (issue 11, hole 6)', () => {
  function capture(secretVariables?: string[]) {
    const destination = new PassThrough()
    let output = ''
    destination.on('data', (chunk: Buffer) => (output += chunk.toString()))
    const logger = createLogger({format: 'json', destination, secretVariables})
    return {logger, output: () => output}
  }

  it('replaces a registered value anywhere in a line: message, nested field, JSON-escaped or URL-encoded', () => {
    registerSecret('plugin"secret\\value-1234')
    registerSecret('hooks.slack.com/services/T0/B0/abcdef')
    expect(redactSecrets('failed: plugin"secret\\value-1234 rejected')).toBe('failed: [redacted] rejected')
    const {logger, output} = capture()
    logger.error({event: 'x', nested: {error: 'auth failed for plugin"secret\\value-1234'}}, 'posting to https://hooks.slack.com/services/T0/B0/abcdef')
    logger.info({url: `https://x/?k=${encodeURIComponent('plugin"secret\\value-1234')}`}, 'ok')
    expect(output()).not.toContain('value-1234')
    expect(output()).not.toContain('abcdef')
    expect(output().match(/\[redacted\]/g)).toHaveLength(3)
  })

  it('censors plugin-declared secret keys, AWS_SESSION_TOKEN and SLACK_WEBHOOK_URL by name', () => {
    const {logger, output} = capture(['VAULTSTORE_KEY', 'AWS_SESSION_TOKEN', 'SLACK_WEBHOOK_URL'])
    logger.info({VAULTSTORE_KEY: 'k1', settings: {AWS_SESSION_TOKEN: 't1', SLACK_WEBHOOK_URL: 'u1'}}, 'settings')
    const line = JSON.parse(output())
    expect(line.VAULTSTORE_KEY).toBe('[redacted]')
    expect(line.settings).toEqual({AWS_SESSION_TOKEN: '[redacted]', SLACK_WEBHOOK_URL: '[redacted]'})
  })

  it('registers every secret setting valuesByVariable resolves (from a flag, the environment or a file)', () => {
    valuesByVariable(specs, flagsOf({VAULTSTORE_KEY: 'from-a-flag-9876'}), {API_TOKEN_FILE: secretFile('from-a-file-5432\n')})
    expect(redactSecrets('from-a-flag-9876 and from-a-file-5432')).toBe('[redacted] and [redacted]')
  })

  it('errorMessage, which REST answers, job records and logs use, is scrubbed too', () => {
    registerSecret('plugin-error-secret-77')
    expect(errorMessage(new Error('store refused plugin-error-secret-77'))).toBe('store refused [redacted]')
  })

  it('leaves very short values alone (replacing every "ab" would make logs unreadable)', () => {
    registerSecret('ab')
    expect(redactSecrets('abc')).toBe('abc')
  })
})
