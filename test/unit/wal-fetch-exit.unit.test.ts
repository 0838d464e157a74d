import * as fs from 'node:fs'
import * as path from 'node:path'

import {EXIT_USAGE, EXIT_WAL_FETCH_FATAL, EXIT_WAL_NOT_IN_ARCHIVE} from '../../src/errors'
import {walFetchExitCode} from '../../src/wal/fetch-exit'

describe('wal fetch exit guard', () => {
  it.each([
    ['success', 0, false, 0],
    ['storage said "no such object"', EXIT_WAL_NOT_IN_ARCHIVE, true, EXIT_WAL_NOT_IN_ARCHIVE],
    ['exit 1 without a "no such object" (Node on an uncaught exception, oclif on a load error)', 1, false, EXIT_WAL_FETCH_FATAL],
    ['bad usage or config (2)', EXIT_USAGE, false, EXIT_WAL_FETCH_FATAL],
    ['a failure after a "no such object" was declared', EXIT_USAGE, true, EXIT_WAL_FETCH_FATAL],
    ['exit 0 after a "no such object" was declared (the code was overwritten)', 0, true, EXIT_WAL_FETCH_FATAL],
    ['the fatal code itself', EXIT_WAL_FETCH_FATAL, false, EXIT_WAL_FETCH_FATAL],
  ])('%s: exit %d → %d', (_case, code, notInArchive, expected) => {
    expect(walFetchExitCode(code as number, notInArchive as boolean)).toBe(expected)
  })

  it('a fetch ended by a signal keeps 128 + n whatever the code said, as PostgreSQL reads death by that signal', () => {
    expect(walFetchExitCode(0, false, 143)).toBe(143)
    expect(walFetchExitCode(EXIT_WAL_NOT_IN_ARCHIVE, true, 131)).toBe(131)
  })

  it('bin/run.js and bin/dev.js install the guard, and run.js repeats the fatal code of src/errors.ts for when dist/ cannot load', () => {
    const run = fs.readFileSync(path.join(__dirname, '..', '..', 'bin', 'run.js'), 'utf8')
    expect(run).toContain(`process.exit(${EXIT_WAL_FETCH_FATAL})`)
    expect(run.indexOf('guardWalFetchExit')).toBeLessThan(run.indexOf("require('@oclif/core')"))
    // The optional compile cache loads after the guard, inside a try: it can never make a fetch exit 1.
    expect(run.indexOf('guardWalFetchExit')).toBeLessThan(run.indexOf("require('../dist/compile-cache')"))
    expect(run).toMatch(/try \{\n\s*require\('\.\.\/dist\/compile-cache'\)\.enableCompileCache\(\)\n\} catch/)
    expect(fs.readFileSync(path.join(__dirname, '..', '..', 'bin', 'dev.js'), 'utf8')).toContain('guardWalFetchExit')
  })
})
