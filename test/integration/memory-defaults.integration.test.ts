import {execFile} from 'node:child_process'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {BIN, ROOT, cliEnv} from '../helpers/cli'

const run = promisify(execFile)
const PROBE = path.join(ROOT, 'test', 'fixtures', 'memory', 'young-generation-probe.js')
const MB = 1024 * 1024

/** Runs the built CLI under Node with the probe preloaded; returns how large V8's young generation grew. */
async function youngGenerationBytes(args: string[], env: Record<string, string> = {}, nodeFlags: string[] = []): Promise<number> {
  const {stderr} = await run(process.execPath, [...nodeFlags, '--require', PROBE, BIN, ...args], {env: cliEnv(env), timeout: 60_000})
  const match = /young-generation-bytes=(\d+)/.exec(stderr)
  if (!match) throw new Error(`the probe printed nothing: ${stderr}`)
  return Number(match[1])
}

// Issue 15 item 3: peak RSS ≤ 100 MB with plain `dbb`. Node 24 grows the young generation to 32 MB
// and more while a backup streams; bin/run.js caps its growth at start-up, without a command-line flag.
describe('memory defaults of the dbb process (bin/run.js)', () => {
  // Measured (session 23, a CI run beside them): capped, 2 MB in 94 of 100 runs and up to 8.7 MB in
  // the others (V8 still resizes it now and then); uncapped, 128 MB in 5 of 5. The assertion held
  // 4 MB before, which 2–6 runs in 100 exceeded, on the code before session 23 too (1 in 40 at
  // 6.3 MB), and it failed one CI run: the cap keeps it an order of magnitude down, not at exactly
  // its initial size.
  it('keeps the young generation an order of magnitude below its uncapped growth under a surviving allocation load', async () => {
    expect(await youngGenerationBytes(['--version'])).toBeLessThanOrEqual(16 * MB)
  })

  it("keeps an operator's own young-generation size (NODE_OPTIONS or node flags)", async () => {
    expect(await youngGenerationBytes(['--version'], {NODE_OPTIONS: '--max-semi-space-size=8'})).toBeGreaterThan(8 * MB)
    expect(await youngGenerationBytes(['--version'], {}, ['--max-semi-space-size=8'])).toBeGreaterThan(8 * MB)
  })

  it('a plain node process without the cap grows it past that bound (the probe measures what it claims)', async () => {
    const {stderr} = await run(process.execPath, ['--require', PROBE, '-e', '0'], {env: cliEnv(), timeout: 60_000})
    expect(Number(/young-generation-bytes=(\d+)/.exec(stderr)?.[1])).toBeGreaterThan(32 * MB)
  })

  it('a command that needs no /metrics does not load prom-client (~20 MB of RSS)', async () => {
    const script = `require(${JSON.stringify(path.join(ROOT, 'dist', 'base-command.js'))}); process.stdout.write(String(Object.keys(require.cache).some((file) => file.includes('prom-client'))))`
    const {stdout} = await run(process.execPath, ['-e', script], {env: cliEnv(), timeout: 60_000})
    expect(stdout).toBe('false')
  })
})
