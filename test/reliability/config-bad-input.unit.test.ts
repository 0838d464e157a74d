import {SECTION_SETTINGS, Section, loadConfig} from '../../src/config'
import {ConfigError, asConfigError} from '../../src/errors'
import {localProvider} from '../../src/plugins/local/src'
import {S3_SETTINGS, parseS3Settings} from '../../src/plugins/s3/src/settings'
import {SETTING_NAMES, SettingName} from '../../src/settings'
import {CORE_CASES, STORAGE_CASES, badValues} from './config-cases'

/**
 * Every setting (issue 8, "Config"), generated from the catalog: an empty value counts as unset (a
 * required one is then "is required", an optional one takes its default, as the README says); a
 * malformed or out-of-range value is one issue naming the variable with an example. The CLI's
 * exit code 2 for these is proven in config-bad-input.e2e.test.ts.
 */
const VALID: Record<string, string> = {DB_HOST: 'db.internal', DB_NAME: 'app', API_TOKEN: 'a'.repeat(32)}

function sectionsOf(name: SettingName): Section[] {
  return (Object.keys(SECTION_SETTINGS) as Section[]).filter((section) => SECTION_SETTINGS[section].includes(name))
}

function issuesOf(run: () => unknown): ConfigError['issues'] {
  try {
    run()
  } catch (error) {
    const configError = asConfigError(error)
    if (!configError) throw error
    return configError.issues
  }

  return []
}

describe('every setting in the catalog has bad-input cases', () => {
  it('core settings (src/settings.ts)', () => {
    expect(Object.keys(CORE_CASES).sort()).toEqual([...SETTING_NAMES].sort())
  })

  it('storage backend settings (local and s3 providers)', () => {
    expect(Object.keys(STORAGE_CASES).sort()).toEqual([...localProvider.settings, ...S3_SETTINGS].map((spec) => spec.env).sort())
  })

  it('every setting without a bad value says why', () => {
    for (const [name, settingCase] of Object.entries({...CORE_CASES, ...STORAGE_CASES})) {
      expect([name, badValues(settingCase).length > 0 || Boolean(settingCase.freeText)]).toEqual([name, true])
    }
  })
})

describe.each(SETTING_NAMES.flatMap((name) => sectionsOf(name).map((section): [SettingName, Section] => [name, section])))(
  '%s (section %s)',
  (name, section) => {
    const settingCase = CORE_CASES[name]
    const base = {...VALID, ...settingCase.with}

    it.each(['', '   '])('empty (%j): %s', (empty) => {
      if (settingCase.required) {
        expect(issuesOf(() => loadConfig([section], {...base, [name]: empty}, {}))).toEqual([
          {variable: name, message: 'is required', example: expect.any(String)},
        ])
      } else {
        const {[name]: _omitted, ...withoutIt} = base
        expect(loadConfig([section], {...base, [name]: empty}, {})).toEqual(loadConfig([section], withoutIt, {}))
      }
    })

    const bad = badValues(settingCase)
    if (bad.length > 0) {
      it.each(bad)('%s value %j: one issue naming it, with an example', (_kind, value) => {
        const issues = issuesOf(() => loadConfig([section], {...base, [name]: value}, {}))
        expect(issues).toEqual([{variable: settingCase.names ?? name, message: expect.any(String), example: expect.any(String)}])
        expect(issues[0].message).not.toContain(value.length > 3 && name === 'API_TOKEN' ? value : '\u0000')
      })
    }
  },
)

describe.each(S3_SETTINGS.map((spec) => spec.env))('%s (s3 backend)', (name) => {
  const settingCase = STORAGE_CASES[name]
  const base = {S3_BUCKET: 'my-db-backups'}

  it('empty: unset', () => {
    if (settingCase.required) {
      expect(issuesOf(() => parseS3Settings({[name]: ''}))).toEqual([{variable: name, message: expect.stringMatching(/^is required/), example: expect.any(String)}])
    } else {
      expect(parseS3Settings({...base, [name]: ''})).toEqual(parseS3Settings(base))
    }
  })

  it.each(badValues(settingCase))('%s value %j: one issue naming it', (_kind, value) => {
    const issues = issuesOf(() => parseS3Settings({...base, [name]: value}))
    expect(issues).toEqual([{variable: settingCase.names ?? name, message: expect.any(String), example: expect.any(String)}])
  })
})

describe('BACKUP_LOCAL_DIR (local backend)', () => {
  it('empty: is required', async () => {
    const error = await localProvider.create({BACKUP_LOCAL_DIR: ''}, {logger: {debug() {}, info() {}, warn() {}}}).catch((caught: unknown) => caught)
    expect(asConfigError(error)?.issues).toEqual([{variable: 'BACKUP_LOCAL_DIR', message: 'is required with STORAGE_BACKEND=local', example: expect.any(String)}])
  })
})
