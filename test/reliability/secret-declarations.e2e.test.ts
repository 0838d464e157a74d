import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {S3_SETTINGS} from '../../src/plugins/s3/src/settings'
import {SETTING_NAMES, setting} from '../../src/settings'
import {runCli, tempDir} from '../helpers/cli'

/**
 * Every setting declared `secret: true` — core's and the built-in backends' — through the built
 * CLI (issue 16 item 10): its value may come from `X_FILE`, and wherever dbb would print it (an
 * error message that quotes a bad value, the JSON `command.failed` event, `--json` output) it
 * reads [redacted]. The secret is planted as the value of ORPHAN_GRACE, whose error quotes the
 * value it refuses, so an unredacted secret would show. Setting both X and X_FILE is refused.
 */
const SECRETS = [...SETTING_NAMES.map((name) => setting(name)), ...S3_SETTINGS].filter((spec) => spec.secret).map((spec) => spec.env)

describe('declared secrets are read from X_FILE and never printed', () => {
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dbb-secret-declarations-')
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('covers every declared secret', () => {
    expect(SECRETS.sort()).toEqual(['API_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'DB_PASSWORD', 'DRILL_DB_PASSWORD', 'NOTIFY_URLS', 'NOTIFY_WEBHOOK_SECRET', 'SLACK_TOKEN', 'SLACK_WEBHOOK_URL'])
  })

  it.each(SECRETS)('%s', async (name) => {
    const secret = `https://hooks.example/${name}-4e9b1c7a`
    const file = path.join(dir, name)
    await fs.writeFile(file, `${secret}\n`)
    const env = {BACKUP_LOCAL_DIR: dir, ORPHAN_GRACE: secret}

    const fromFile = await runCli(['prune', '--dry-run'], {...env, [`${name}_FILE`]: file, LOG_FORMAT: 'json'})
    expect(fromFile.code).toBe(2)
    expect(fromFile.stderr).toContain('Error: ORPHAN_GRACE: "[redacted]" is not a duration')
    const event = JSON.parse(fromFile.stderr.trim().split('\n').at(-1) as string) as {event: string; msg: string}
    expect([event.event, event.msg]).toEqual(['command.failed', expect.stringContaining('[redacted]')])
    expect(fromFile.stdout + fromFile.stderr).not.toContain(secret)

    const json = await runCli(['prune', '--dry-run', '--json'], {...env, [name]: secret})
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout)).toEqual({error: 'CONFIG_INVALID', message: expect.stringContaining('"[redacted]" is not a duration'), exitCode: 2})
    expect(json.stdout + json.stderr).not.toContain(secret)
    expect(json.stdout + json.stderr).not.toContain(encodeURIComponent(secret))

    // serve takes every secret setting as a flag (a command that does not read one ignores it).
    const both = await runCli(['serve'], {...env, ORPHAN_GRACE: '24h', [name]: secret, [`${name}_FILE`]: file})
    expect(both.code).toBe(2)
    expect(both.stderr).toContain(`Error: ${name}_FILE: is set together with ${name}; set only one of them`)
  })
})
