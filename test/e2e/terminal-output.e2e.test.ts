import {spawn} from 'node:child_process'

import {BIN, cliEnv, collect, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * What a person sees on a terminal (a real pseudo-terminal through `script`): the live progress
 * line never runs into a log line and is gone after the work ends, and the plain log is a few
 * one-line events plus the summary, not every structured field.
 */
describe('terminal output', () => {
  let cluster: PgCluster
  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 200_000)
  })
  afterAll(async () => cluster?.destroy())

  const onTerminal = async (args: string[], env: Record<string, string>) => {
    const command = [process.execPath, BIN, ...args].map((word) => `'${word}'`).join(' ')
    // script gives the command a pseudo-terminal as stdin, stdout and stderr; -e passes its exit code.
    const child = spawn('script', ['-qec', `stty cols 200 rows 50; exec ${command}`, '/dev/null'], {
      env: cliEnv({...env, LOG_FORMAT: undefined, TERM: 'xterm'}),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    return collect(child)
  }

  it('clears the progress line before each log line and at the end; plain log lines are short', async () => {
    const dir = await tempDir()
    const result = await onTerminal(['backup', 'run'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: dir})
    const screen = result.stdout
    expect([result.code, screen.slice(-500)]).toEqual([0, expect.stringContaining('Backup backup_')])

    // The progress line was drawn (in place, with \r and erase-line) …
    expect(screen).toMatch(/\r\u001B\[2Kbacking up: [\d.]+ [kMG]?B/)
    // … and every log line starts on a clean line: after a newline or an erase, never after progress text.
    const logLines = [...screen.matchAll(/\[\d\d:\d\d:\d\d\] (?:\S*)(INFO|WARN|ERROR)/g)]
    expect(logLines.length).toBeGreaterThanOrEqual(2)
    for (const match of logLines) {
      const before = screen.slice(Math.max(0, match.index! - 5), match.index)
      expect(match.index === 0 || /(\n|\u001B\[2K)$/.test(before)).toBe(true)
    }

    // Nothing is redrawn after the summary, and the summary is the end of the output.
    const summaryAt = screen.indexOf('Backup backup_')
    expect(screen.slice(summaryAt)).not.toContain('backing up:')
    // One line per event (no field-per-line dump of the structured event), a few lines in all.
    expect(screen).not.toMatch(/^\s+backupId: /m)
    const visibleLines = screen.split(/\r?\n/).filter((line) => line.replaceAll(/\r\u001B\[2K[^\r\n]*?(?=\r|$)/g, '').trim() !== '')
    expect(visibleLines.length).toBeLessThanOrEqual(8)

    // The restore of that backup shows percent and time left, and also ends with its summary alone.
    const restore = await onTerminal(['restore', 'latest', '--target-db', 'shop_copy', '--force'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: dir})
    expect([restore.code, restore.stdout.slice(-300)]).toEqual([0, expect.stringContaining('Restored backup_')])
    expect(restore.stdout).toMatch(/\r\u001B\[2Krestoring into shop_copy: [\d.]+ [kMG]?B of [\d.]+ [kMG]?B \(\d+\.\d %/)
    expect(restore.stdout.slice(restore.stdout.indexOf('Restored backup_'))).not.toMatch(/restoring into|verifying backup_/)
  })
})
