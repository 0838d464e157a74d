import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {SECTION_SETTINGS, Section, loadConfig} from '../../src/config'
import {settingField} from '../../src/config/fields'
import {asConfigError} from '../../src/errors'
import {localProvider} from '../../src/plugins/local/src'
import {S3_SETTINGS, parseS3Settings} from '../../src/plugins/s3/src/settings'
import {forgetSecrets, redactSecrets} from '../../src/secrets'
import {renderSettingsDocs, settingsTable} from '../../src/settings-docs'
import {
  CommandId,
  EVERY_COMMAND,
  SETTING_NAMES,
  SettingName,
  SettingSpec,
  declaration,
  defaultLabel,
  helpSummary,
  resolveSettings,
  setting,
  settingsOf,
} from '../../src/settings'

/**
 * One declaration per setting (issue 16 item 10): whatever is derived from src/settings.ts — the
 * commands' flags (as oclif's manifest records them), config defaults, help texts, `X_FILE`
 * secrets, the README tables — says what the declaration says. Each test names the setting that
 * breaks it.
 */
const ROOT = path.resolve(__dirname, '..', '..')
const manifest = JSON.parse(readFileSync(path.join(ROOT, 'oclif.manifest.json'), 'utf8')) as {
  commands: Record<string, {flags: Record<string, {env?: string; summary?: string; helpGroup?: string; helpValue?: string}>}>
}
const BUILT_IN_BACKENDS: Record<string, readonly SettingSpec[]> = {local: localProvider.settings, s3: S3_SETTINGS}
const PLUGIN_SETTINGS = Object.values(BUILT_IN_BACKENDS).flat()
const VALID: Record<string, string> = {DB_HOST: 'db.internal', DB_NAME: 'app', API_TOKEN: 'a'.repeat(32)}
const COMMANDS: CommandId[] = ['backup run', 'backup list', 'backup download', 'prune', 'restore', 'serve', 'check', 'wal push', 'wal fetch', 'wal spool-upload']

function sectionsOf(name: SettingName): Section[] {
  return (Object.keys(SECTION_SETTINGS) as Section[]).filter((section) => SECTION_SETTINGS[section].includes(name))
}

function commandClass(id: CommandId): {configSections: readonly Section[]} {
  return require(path.join(ROOT, 'src', 'commands', ...id.split(' '))).default
}

describe('every command’s flags are its declared settings', () => {
  const settingFlagsOf = (id: string) =>
    Object.entries(manifest.commands[id].flags)
      .filter(([, flag]) => flag.env !== undefined)
      .map(([flag, {env}]) => [flag, env])
      .sort()

  it.each(COMMANDS)('%s', (id) => {
    const declared = [...settingsOf(EVERY_COMMAND), ...settingsOf(id)].map((name) => [declaration(name).flag, name]).sort()
    expect(settingFlagsOf(id.replace(' ', ':'))).toEqual(declared)
  })

  it('commands that declare no settings have only the base flags', () => {
    const base = settingsOf(EVERY_COMMAND).map((name) => [declaration(name).flag, name]).sort()
    for (const id of Object.keys(manifest.commands).filter((id) => id.startsWith('backends'))) expect([id, settingFlagsOf(id)]).toEqual([id, base])
  })

  it.each(COMMANDS)('%s: every setting of the config sections it validates is one of its flags (else the variable would be ignored)', (id) => {
    const flags = new Set([...settingsOf(EVERY_COMMAND), ...settingsOf(id)])
    // restore validates the database section only when it restores (listing needs storage alone).
    const later: Section[] = id === 'restore' ? ['database'] : []
    const read = [...commandClass(id).configSections, ...later].flatMap((section) => SECTION_SETTINGS[section])
    expect(read.filter((name) => !flags.has(name))).toEqual([])
  })

  it('help text, group and placeholder of each flag come from the declaration (per-command wording where declared)', () => {
    for (const id of COMMANDS) {
      for (const name of [...settingsOf(EVERY_COMMAND), ...settingsOf(id)]) {
        const {flag, group, summaryFor} = declaration(name)
        const spec = setting(name)
        const summary = helpSummary({...spec, summary: summaryFor?.[id] ?? spec.summary})
        expect([id, name, manifest.commands[id.replace(' ', ':')].flags[flag]]).toEqual([
          id,
          name,
          expect.objectContaining({summary, helpGroup: group, helpValue: spec.secret ? '<secret>' : spec.example}),
        ])
      }
    }
  })

  it('--db-name says what each command does with the database', () => {
    expect(manifest.commands['backup:run'].flags['db-name'].summary).toMatch(/^Database to back up/)
    expect(manifest.commands.restore.flags['db-name'].summary).toMatch(/^Database to restore into/)
    expect(manifest.commands.restore.flags['db-name'].summary).not.toContain('back up')
  })

  it('flag names and single-letter flags are unique across settings', () => {
    const flags = [...SETTING_NAMES.map((name) => declaration(name).flag), ...PLUGIN_SETTINGS.map((spec) => spec.flag)]
    expect(flags.filter((flag, index) => flags.indexOf(flag) !== index)).toEqual([])
    const chars = SETTING_NAMES.map((name) => declaration(name).char).filter((char) => char !== undefined)
    expect(chars.filter((char, index) => chars.indexOf(char) !== index)).toEqual([])
  })
})

describe('defaults', () => {
  it.each(SETTING_NAMES)('%s: a default, a computed default in words, required, or none — never two', (name) => {
    const {default: fallback, defaultText, required} = declaration(name)
    expect([fallback, defaultText, required].filter((value) => value !== undefined).length).toBeLessThanOrEqual(1)
  })

  it.each(SETTING_NAMES.filter((name) => declaration(name).default !== undefined))('%s: the declared default is a valid value, and setting it changes nothing', (name) => {
    const fallback = declaration(name).default as string
    expect(settingField(name).safeParse(fallback).success).toBe(true)
    for (const section of sectionsOf(name)) {
      expect([section, loadConfig([section], {...VALID, [name]: fallback}, {})]).toEqual([section, loadConfig([section], VALID, {})])
    }
  })

  it.each(SETTING_NAMES)('%s: required means unset is "is required"; otherwise unset is accepted', (name) => {
    const result = settingField(name).safeParse(undefined)
    if (declaration(name).required) expect(result.error?.issues.map((issue) => issue.message)).toEqual(['is required'])
    else expect(result.success).toBe(true)
  })

  it.each(SETTING_NAMES)('%s: the example is a valid value', (name) => {
    const {example, secret} = declaration(name)
    if (secret || example.startsWith('$(')) return
    expect(settingField(name).safeParse(example.replace(/^"(.*)"$/, '$1')).success).toBe(true)
  })

  it.each(S3_SETTINGS.filter((spec) => spec.default !== undefined).map((spec) => [spec.env, spec.default as string]))(
    's3 backend %s: the declared default %s is what the backend uses when unset',
    (name, fallback) => {
      const base = {S3_BUCKET: 'my-db-backups'}
      expect(parseS3Settings({...base, [name]: fallback})).toEqual(parseS3Settings(base))
    },
  )

  it('no summary states a default in prose (the declared default is shown from the declaration)', () => {
    const specs = [...SETTING_NAMES.map((name) => setting(name)), ...PLUGIN_SETTINGS]
    const texts = specs.flatMap((spec) => [[spec.env, spec.summary], ...Object.entries(declarationOrEmpty(spec.env)).map(([command, text]) => [`${spec.env} (${command})`, text])])
    expect(texts.filter(([, text]) => /\bdefault\b/i.test(text))).toEqual([])
  })

  it('help shows the declared default or the words for a computed one', () => {
    expect(helpSummary(setting('DB_PORT'))).toBe('PostgreSQL port. [default: 5432]')
    expect(helpSummary(setting('LOG_FORMAT'))).toMatch(/\[default: plain on a terminal, else json\]$/)
    expect(helpSummary(setting('DB_HOST'))).not.toContain('default')
  })
})

function declarationOrEmpty(env: string): Partial<Record<CommandId, string>> {
  return (SETTING_NAMES as string[]).includes(env) ? (declaration(env as SettingName).summaryFor ?? {}) : {}
}

describe('secrets', () => {
  const secrets = [...SETTING_NAMES.map((name) => setting(name)), ...PLUGIN_SETTINGS].filter((spec) => spec.secret)

  afterEach(() => forgetSecrets())

  it('the declared secrets are the ones the README lists for *_FILE', () => {
    expect(secrets.map((spec) => spec.env).sort()).toEqual(['API_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'DB_PASSWORD', 'DRILL_DB_PASSWORD', 'NOTIFY_URLS', 'NOTIFY_WEBHOOK_SECRET', 'SLACK_TOKEN', 'SLACK_WEBHOOK_URL'])
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8')
    for (const spec of secrets) expect([spec.env, readme.includes(`\`${spec.env}_FILE\``)]).toEqual([spec.env, true])
  })

  it.each(secrets.map((spec) => [spec.env, spec]))('%s: read from its _FILE variable and redacted by value; both set is refused naming the file variable', (_env, spec) => {
    const value = `https://secret.example/${spec.env}-7f3a9c`
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbb-secret-file-'))
    const file = path.join(dir, 'secret')
    writeFileSync(file, `${value}\n`)
    try {
      const {values, issues} = resolveSettings([spec], {}, {[`${spec.env}_FILE`]: file})
      expect([issues, values[spec.env]]).toEqual([[], value])
      expect(redactSecrets(`failed with ${value} and ${encodeURIComponent(value)}`)).toBe('failed with [redacted] and [redacted]')
      const both = resolveSettings([spec], {[spec.flag]: 'given-directly'}, {[`${spec.env}_FILE`]: file})
      expect(both.issues).toEqual([{variable: `${spec.env}_FILE`, message: `is set together with ${spec.env}; set only one of them`}])
      expect(helpSummary(spec)).toContain(`Or ${spec.env}_FILE: a file holding it.`)
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })
})

describe('bad values name the variable and what is allowed', () => {
  const sample: [SettingName, string, RegExp][] = [
    ['DB_PORT', 'abc', /^must be a whole number from 1 to 65535$/],
    ['LOG_FORMAT', 'xml', /^must be json or plain$/],
    ['LOG_LEVEL', 'loud', /^must be one of trace, debug, info, warn, error, fatal, silent$/],
    ['BASE_BACKUP_WAL_METHOD', 'stream', /^must be fetch or none$/],
    ['WAL_STREAMING', 'maybe', /^must be true or false$/],
    ['ORPHAN_GRACE', 'soon', /use e\.g\. 24h, 30m, PT24H, P1D/],
    ['SLACK_API_URL', 'slack', /^must be an http\(s\) URL$/],
    ['BACKUP_INTERVAL', '59s', /^must be at least 1 minute/],
  ]
  it.each(sample)('%s=%s', (name, value, message) => {
    const [section] = sectionsOf(name)
    let caught: unknown
    try {
      loadConfig([section], {...VALID, [name]: value}, {})
    } catch (error) {
      caught = error
    }

    expect(asConfigError(caught)?.issues).toEqual([{variable: name, message: expect.stringMatching(message), example: declaration(name).example}])
  })
})

describe('README configuration tables (generated: npm run docs:settings)', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8')

  it('are what the declarations render (run `npm run build && npm run docs:settings` and commit README.md)', () => {
    expect(renderSettingsDocs(readme, BUILT_IN_BACKENDS)).toBe(readme)
  })

  it('list every setting once, with its flag and its default', () => {
    for (const spec of [...SETTING_NAMES.map((name) => setting(name)), ...PLUGIN_SETTINGS]) {
      const rows = readme.split('\n').filter((line) => line.startsWith(`| \`${spec.env}\` | \`-`))
      expect([spec.env, rows.length]).toEqual([spec.env, 1])
      const [, flag, fallback] = rows[0].split(' | ')
      expect([spec.env, flag]).toEqual([spec.env, `\`--${spec.flag}\``])
      const label = defaultLabel(spec)
      if (spec.required) expect([spec.env, fallback]).toEqual([spec.env, expect.stringMatching(/^— \(required/)])
      else if (spec.default !== undefined) expect([spec.env, fallback]).toEqual([spec.env, `\`${spec.default}\``])
      else if (label !== undefined) expect([spec.env, fallback]).toEqual([spec.env, label.replaceAll('<', '&lt;').replaceAll('>', '&gt;')])
      else expect([spec.env, fallback]).toEqual([spec.env, '—'])
    }
  })

  it('refuse a README that leaves a setting out, or names an unknown group', () => {
    const withoutLogging = readme.replace('<!-- settings groups="DATABASE,BACKUP,RETENTION,STORAGE,LOGGING" -->', '<!-- settings groups="DATABASE,BACKUP,RETENTION,STORAGE" -->')
    expect(() => renderSettingsDocs(withoutLogging, BUILT_IN_BACKENDS)).toThrow(/LOG_FORMAT \(group LOGGING, 0 tables\)/)
    expect(() => renderSettingsDocs(`${readme}\n<!-- settings groups="NOPE" -->\n<!-- settingsstop -->\n`, BUILT_IN_BACKENDS)).toThrow(/no settings group "NOPE"/)
    expect(() => renderSettingsDocs(`${readme}\n<!-- settings backend="ftp" -->\n<!-- settingsstop -->\n`, BUILT_IN_BACKENDS)).toThrow(/no storage backend "ftp"/)
  })

  it('a cell never breaks the table or turns into HTML', () => {
    const table = settingsTable([{env: 'X', flag: 'x', summary: 'a | b <prefix>', example: 'x', defaultText: '<slot>'}])
    expect(table.split('\n')[2]).toBe('| `X` | `--x` | &lt;slot&gt; | a \\| b &lt;prefix&gt; |')
  })
})

describe('misspelt variables', () => {
  const {misspeltSettings} = require('../../src/settings-typos') as typeof import('../../src/settings-typos')
  const known = [...SETTING_NAMES, 'DB_PASSWORD_FILE', 'BACKUP_LOCAL_DIR']

  it('names a near miss with the setting it is close to, ignoring case', () => {
    expect(misspeltSettings({DB_PASWORD: 'x', LOG_LEVL: 'x', db_host: 'x', COMPRESSION_LEVLE: 'x', DB_PASSWORD_FIEL: 'x'}, known)).toEqual([
      {variable: 'COMPRESSION_LEVLE', suggestion: 'COMPRESSION_LEVEL'},
      {variable: 'DB_PASSWORD_FIEL', suggestion: 'DB_PASSWORD_FILE'},
      {variable: 'DB_PASWORD', suggestion: 'DB_PASSWORD'},
      {variable: 'LOG_LEVL', suggestion: 'LOG_LEVEL'},
      {variable: 'db_host', suggestion: 'DB_HOST'},
    ])
  })

  it('leaves exact names and the usual unrelated variables alone', () => {
    const usual = {PATH: '', HOME: '', HOSTNAME: '', LANG: '', TZ: '', PGPASSWORD: '', PGPASSFILE: '', PGHOST: '', NODE_OPTIONS: '', UV_THREADPOOL_SIZE: '', AWS_REGION: '', AWS_PROFILE: '', SHELL: '', TERM: ''}
    expect(misspeltSettings({...usual, ...Object.fromEntries(known.map((name) => [name, 'x']))}, known)).toEqual([])
  })
})
