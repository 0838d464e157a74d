import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {runUploader, spoolStatus} from '../../src/wal/spool'
import {tempDir} from '../helpers/cli'

/**
 * A push that finds the spool full tells PostgreSQL's log the uploader's last error, read from
 * `<spool>/uploader.error`. Parallel uploads against a failing storage fail together and each
 * rewrites that file; a reader must never see it empty or half-written (it then logged "the
 * uploader has not reported an error yet" while storage was down: a CI failure of wal-spool.e2e).
 * Storage here really fails: its directory lies under a regular file.
 */
/** The pid of a process that ran and exited: no process has it now. */
async function deadPid(): Promise<number> {
  const child = execFile(process.execPath, ['-e', ''])
  await new Promise((resolve) => child.on('exit', resolve))
  return child.pid!
}

describe('the spool uploader error report', () => {
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dbb-spool-error-')
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('is always whole while storage fails, names a spooled segment, and is gone once storage is back', async () => {
    const spoolDir = path.join(dir, 'spool')
    await fs.mkdir(spoolDir)
    const names = Array.from({length: 8}, (_, n) => `00000001000000000000001${n}`)
    for (const name of names) await fs.writeFile(path.join(spoolDir, name), randomBytes(64 * 1024))
    const blocked = path.join(dir, 'down')
    await fs.writeFile(blocked, '')
    const storage = new LocalBackend(path.join(blocked, 'store'))

    const controller = new AbortController()
    const uploading = runUploader({storage, spoolDir, parallel: names.length, signal: controller.signal})

    // Three failing rounds (back-off 0.5 s, then 1 s) of eight parallel rewrites, read all along by
    // another process, as a full-spool push reads it.
    const reader = await promisify(execFile)(
      process.execPath,
      [
        '-e',
        `const fs = require('fs'); const file = process.argv[1]; const until = Date.now() + 2500; const seen = {reads: 0, missing: 0, empty: 0, reports: new Set()}
        while (Date.now() < until) {
          let text
          try { text = fs.readFileSync(file, 'utf8') } catch { if (seen.reports.size > 0) seen.missing++; continue }
          if (text.trim() === '') { seen.empty++; continue }
          seen.reads++; seen.reports.add(text)
        }
        console.log(JSON.stringify({...seen, reports: [...seen.reports]}))`,
        path.join(spoolDir, 'uploader.error'),
      ],
      {encoding: 'utf8', timeout: 20_000},
    )
    const seen = JSON.parse(reader.stdout) as {reads: number; missing: number; empty: number; reports: string[]}
    expect(seen.reads).toBeGreaterThan(1000)
    expect({missing: seen.missing, empty: seen.empty}).toEqual({missing: 0, empty: 0})
    for (const report of seen.reports) expect(report).toMatch(/^\S+ 00000001000000000000001[0-7]: .+\n$/)
    expect((await spoolStatus(spoolDir)).lastError).toMatch(/00000001000000000000001[0-7]/)

    // Storage back: the next round stores everything and withdraws the report.
    await fs.rm(blocked)
    await fs.mkdir(path.join(blocked, 'store'), {recursive: true})
    const deadline = Date.now() + 30_000
    while ((await spoolStatus(spoolDir)).files > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
    controller.abort()
    await uploading
    expect(await spoolStatus(spoolDir)).toEqual({files: 0, bytes: 0, lastError: undefined})
    expect(await fs.readdir(spoolDir)).not.toContainEqual(expect.stringMatching(/uploader\.error/))
    expect((await fs.readdir(path.join(blocked, 'store', 'wal'))).sort()).toEqual(names.map((name) => `${name}.gz`))
  }, 60_000)

  it("an uploader killed between writing its report and renaming it leaves a staged file the next uploader removes; a live writer's is kept", async () => {
    const spoolDir = path.join(dir, 'spool-killed')
    await fs.mkdir(spoolDir)
    // The staged names reportUploaderError writes: `uploader.error.<pid>.<hex>.<writer>.tmp`.
    const dead = await deadPid()
    const killed = `uploader.error.${dead}.0badc0de.000000010000000000000021.tmp`
    const live = `uploader.error.${process.ppid}.0badc0de.serve.tmp`
    for (const name of [killed, live]) await fs.writeFile(path.join(spoolDir, name), 'an error being reported\n')
    const segment = '000000010000000000000022'
    await fs.writeFile(path.join(spoolDir, segment), randomBytes(4096))

    await fs.mkdir(path.join(dir, 'store-killed'))
    const storage = new LocalBackend(path.join(dir, 'store-killed'))
    const result = await runUploader({storage, spoolDir, parallel: 2, idleExitMs: 0})
    expect(result.stored).toBe(1)
    expect((await fs.readdir(spoolDir)).sort()).toEqual([live])
    // The staged report is never taken for the report itself.
    expect((await spoolStatus(spoolDir)).lastError).toBeUndefined()
  }, 30_000)
})
