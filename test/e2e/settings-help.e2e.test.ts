import {runCli} from '../helpers/cli'
import {CommandId, EVERY_COMMAND, SettingName, declaration, defaultLabel, setting, settingsOf} from '../../src/settings'

/**
 * `--help` of every command that takes settings, as users read it (issue 16 item 10): each setting
 * flag is listed with its variable, and the only default its text states is the declared one —
 * no prose default left over that contradicts it. Run through the built CLI.
 */
const COMMANDS: CommandId[] = ['backup run', 'backup list', 'backup download', 'prune', 'restore', 'serve', 'check', 'wal push', 'wal fetch', 'wal spool-upload']

/** The help text of one flag: from its `--flag=` line to the next flag or heading, whitespace folded. */
function flagText(help: string, flag: string): string | undefined {
  const lines = help.split('\n')
  const start = lines.findIndex((line) => new RegExp(`^ {2}--${flag}[=\\s]`).test(line))
  if (start === -1) return undefined
  const rest = lines.slice(start + 1)
  const end = rest.findIndex((line) => /^ {2}-{1,2}[a-z]/.test(line) || /^\S/.test(line) || line.trim() === '')
  return [lines[start], ...rest.slice(0, end === -1 ? rest.length : end)].join(' ').replace(/\s+/g, ' ').trim()
}

describe.each(COMMANDS)('dbb %s --help', (id) => {
  let help: string

  beforeAll(async () => {
    const result = await runCli([...id.split(' '), '--help'], {COLUMNS: '200'})
    expect(result.code).toBe(0)
    help = result.stdout
  })

  const names: SettingName[] = [...settingsOf(EVERY_COMMAND), ...settingsOf(id)]
  it.each(names)('%s: listed with its variable; any default stated is the declared one', (name) => {
    const text = flagText(help, declaration(name).flag)
    expect([name, text]).toEqual([name, expect.stringContaining(`[env: ${name}]`)])
    const stated = [...(text as string).matchAll(/\bdefault\b:?\s*([^\]]*)/gi)].map((match) => match[1].trim())
    const label = defaultLabel(setting(name))
    expect([name, stated]).toEqual([name, label === undefined ? [] : [label]])
  })
})
