import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {DETACHED_LOG_MAX_BYTES, spawnDetachedDbb} from '../../src/backup/child-process'
import {tempDir} from '../helpers/cli'
import {waitFor} from '../helpers/wal'

/**
 * The log of a detached dbb (the spool uploader's uploader.log, the prefetcher's prefetch.log):
 * what the background process writes lands there, private to its user, bounded across the weeks a
 * standby restarts it, and a log that cannot be opened never keeps the process from starting.
 * The "dbb" here is a stand-in script, started exactly as the real one is (node <entry> args…).
 */
describe('spawnDetachedDbb: the background process log', () => {
  let dir: string
  let entry: string

  beforeAll(async () => {
    dir = await tempDir('dbb-detached-log-')
    entry = path.join(dir, 'stand-in.js')
    // Writes a line to stdout and stderr, then drops a marker: the process ran to its end.
    await fs.writeFile(
      entry,
      `const [line, marker] = process.argv.slice(2)
process.stdout.write(line + ' (stdout)\\n')
process.stderr.write(line + ' (stderr)\\n')
require('node:fs').writeFileSync(marker, 'done')
`,
    )
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  const run = async (logFile: string, line: string) => {
    const marker = path.join(dir, `${line}.done`)
    spawnDetachedDbb(entry, [line, marker], logFile)
    await waitFor(`the stand-in to write ${line}`, async () => ((await fs.stat(marker).catch(() => undefined)) ? true : undefined), 20_000)
    // stdout/stderr are written before the marker, through the same file description.
  }

  it('appends both streams to the log, made 0600 in a 0700 directory created for it', async () => {
    const logFile = path.join(dir, 'spool', 'prefetch.log')
    await run(logFile, 'first')
    await run(logFile, 'second')
    expect(await fs.readFile(logFile, 'utf8')).toBe('first (stdout)\nfirst (stderr)\nsecond (stdout)\nsecond (stderr)\n')
    expect((await fs.stat(logFile)).mode & 0o777).toBe(0o600)
    expect((await fs.stat(path.dirname(logFile))).mode & 0o777).toBe(0o700)
  }, 30_000)

  it('sets a full log aside as <log>.1 at the next start, replacing the one before', async () => {
    const logFile = path.join(dir, 'uploader.log')
    await fs.writeFile(`${logFile}.1`, 'the oldest log\n')
    const full = 'x'.repeat(DETACHED_LOG_MAX_BYTES - 1) + '\n'
    await fs.writeFile(logFile, full, {mode: 0o600})
    await run(logFile, 'after-rotation')
    expect(await fs.readFile(logFile, 'utf8')).toBe('after-rotation (stdout)\nafter-rotation (stderr)\n')
    expect((await fs.readFile(`${logFile}.1`, 'utf8')) === full).toBe(true)

    // Below the limit nothing moves.
    await run(logFile, 'appended')
    expect(await fs.readFile(logFile, 'utf8')).toBe('after-rotation (stdout)\nafter-rotation (stderr)\nappended (stdout)\nappended (stderr)\n')
  }, 30_000)

  it('still starts the process when the log cannot be opened', async () => {
    const notADirectory = path.join(dir, 'a-file')
    await fs.writeFile(notADirectory, '')
    await run(path.join(notADirectory, 'prefetch.log'), 'no-log')
    expect(await fs.readFile(notADirectory, 'utf8')).toBe('')
  }, 30_000)
})
