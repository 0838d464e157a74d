import {runCli, tempDir} from '../helpers/cli'
import {CORE_CASES, STORAGE_CASES, SettingCase, badValues} from './config-cases'

/**
 * The built CLI on bad configuration (issue 8, "Config"): exit code 2, before anything runs, with
 * an `Error: <VARIABLE>: …` line for every bad variable, no stack trace, no secret echoed. The
 * values come from config-cases.ts (which a unit test keeps in step with the catalog). `dbb serve`
 * reads every core section, so one run checks all independent core settings at once; settings
 * only checked together with another (a schedule and its TZ, a key and its secret) run alone.
 */
const errorLines = (stderr: string) => stderr.split('\n').filter((line) => line.startsWith('Error: '))
// Checked after every field is valid (cron expressions against TZ; the backend's own settings), so not in the all-at-once case.
const TOGETHER = new Set(['BACKUP_SCHEDULE', 'BASE_BACKUP_SCHEDULE', 'DRILL_SCHEDULE', 'TZ', 'STORAGE_BACKEND'])
const SECRET_LIKE = /TOKEN|PASSWORD|SECRET/

function firstBad(settingCase: SettingCase): string | undefined {
  return badValues(settingCase)[0]?.[1]
}

function expectRejected(result: {code: number | null; stderr: string}, variables: string[], values: Record<string, string>): void {
  const lines = errorLines(result.stderr)
  expect(result.code).toBe(2)
  for (const variable of variables) expect([variable, lines.some((line) => line.startsWith(`Error: ${variable}: `))]).toEqual([variable, true])
  expect(result.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/)
  for (const [name, value] of Object.entries(values)) if (SECRET_LIKE.test(name) && value.length >= 8) expect(result.stderr).not.toContain(value)
  // Nothing ran: no log line of a started backup or server.
  expect(result.stderr).not.toMatch(/"event":"(backup\.started|server\.listening)"/)
}

describe('bad configuration through the CLI: exit 2 naming each variable', () => {
  let dir: string
  const valid = () => ({DB_HOST: '127.0.0.1', DB_NAME: 'app', API_TOKEN: 'a'.repeat(32), BACKUP_LOCAL_DIR: dir})

  beforeAll(async () => {
    dir = await tempDir('dbb-config-')
  })

  it('dbb serve with every independent core setting bad at once: one line for each', async () => {
    const bad = Object.fromEntries(
      Object.entries(CORE_CASES)
        .filter(([name, settingCase]) => !TOGETHER.has(name) && !settingCase.with && !settingCase.names && firstBad(settingCase) !== undefined)
        .map(([name, settingCase]) => [name, firstBad(settingCase) as string]),
    )
    expect(Object.keys(bad).length).toBeGreaterThan(25)
    const result = await runCli(['serve'], {...valid(), ...bad})
    expectRejected(result, Object.keys(bad), bad)
  })

  it.each([
    ['BACKUP_SCHEDULE', {BACKUP_SCHEDULE: '61 * * * *'}],
    ['BACKUP_SCHEDULE', {BACKUP_SCHEDULE: '0 3 * * *', BACKUP_INTERVAL: '12h'}],
    ['TZ', {BACKUP_SCHEDULE: '0 3 * * *', TZ: 'Mars/Olympus_Mons'}],
    ['BASE_BACKUP_SCHEDULE', {BASE_BACKUP_SCHEDULE: '0 25 * * *'}],
    ['TZ', {BASE_BACKUP_SCHEDULE: '0 2 * * 0', TZ: 'UTC+25'}],
  ])('dbb serve: %s checked together with its partner (%j)', async (variable, values) => {
    const result = await runCli(['serve'], {...valid(), ...values})
    expectRejected(result, [variable], values)
    expect(errorLines(result.stderr)).toHaveLength(1)
  })

  it('STORAGE_BACKEND malformed or unknown', async () => {
    for (const value of [...(CORE_CASES.STORAGE_BACKEND.malformed ?? []), 'ftp']) {
      expectRejected(await runCli(['backup', 'list'], {STORAGE_BACKEND: value}), ['STORAGE_BACKEND'], {})
    }
  })

  it('the s3 backend’s settings, all bad at once, then the ones checked in pairs', async () => {
    const independent = Object.fromEntries(
      Object.entries(STORAGE_CASES)
        .filter(([name, settingCase]) => name.startsWith('S3_') && !settingCase.names && name !== 'S3_SSE_KMS_KEY_ID' && firstBad(settingCase) !== undefined)
        .map(([name, settingCase]) => [name, firstBad(settingCase) as string]),
    )
    const all = await runCli(['backup', 'list'], {STORAGE_BACKEND: 's3', ...independent})
    expectRejected(all, Object.keys(independent), independent)

    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'S3_SSE_KMS_KEY_ID']) {
      const values = {[name]: firstBad(STORAGE_CASES[name]) as string}
      const result = await runCli(['backup', 'list'], {STORAGE_BACKEND: 's3', S3_BUCKET: 'my-db-backups', ...values})
      expectRejected(result, [STORAGE_CASES[name].names ?? name], values)
    }
  })

  it('empty values count as unset: only the required ones are reported, as "is required"', async () => {
    const empty = Object.fromEntries([...Object.keys(CORE_CASES), 'BACKUP_LOCAL_DIR'].map((name) => [name, '']))
    const result = await runCli(['serve'], empty)
    expect(result.code).toBe(2)
    expect(errorLines(result.stderr).map((line) => line.replace(/ \(example: .*\)$/, '')).sort()).toEqual(
      [
        'Error: API_TOKEN: is required',
        'Error: BACKUP_LOCAL_DIR: is required with STORAGE_BACKEND=local',
        'Error: DB_HOST: is required',
        'Error: DB_NAME: is required',
      ].sort(),
    )
  })
})
