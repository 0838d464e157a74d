import {spawnSync} from 'node:child_process'
import {chmodSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import * as path from 'node:path'

import {ROOT, tempDir} from '../helpers/cli'

/**
 * The supported Node (issue 18 item 7): one floor (package.json engines), one release (the image's
 * NODE_IMAGE), and scripts/node-runtime.sh putting that release first on PATH for the tests, the demo
 * and the benchmark when the machine's node is older. No network here: the cache is pre-filled with a
 * stand-in for the release, and an "old node" stands first on PATH.
 */
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8')
const floor = Number(/^>=\s*(\d+)$/.exec(JSON.parse(read('package.json')).engines.node)?.[1])
const release = /^ARG NODE_IMAGE=node:([\d.]+)-/m.exec(read('docker/Dockerfile'))?.[1] ?? ''

describe('the supported Node runtime', () => {
  it('engines, the image and the runtime of the tests name one maintained LTS major', () => {
    expect(floor).toBeGreaterThanOrEqual(24)
    expect(Number(release.split('.')[0])).toBe(floor)
    // The runtime this suite runs on is the one npm test sets up (or a newer one the machine has).
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(floor)
  })

  it('npm test, npm run demo, install-deps and the benchmarks all go through scripts/node-runtime.sh', () => {
    for (const script of ['scripts/test.sh', 'scripts/demo.sh', 'scripts/install-deps.sh']) {
      expect([script, /^\. scripts\/node-runtime\.sh$/m.test(read(script))]).toEqual([script, true])
    }

    const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>
    const benchmarks = Object.keys(scripts).filter((name) => name === 'bench' || name.startsWith('bench:'))
    expect(benchmarks).toEqual(expect.arrayContaining(['bench', 'bench:wal', 'bench:wal-replay', 'bench:proofs']))
    for (const name of benchmarks) expect([name, scripts[name]]).toEqual([name, expect.stringMatching(/^bash scripts\/node-runtime\.sh /)])
  })

  it('with an older node first on PATH, the cached release is put first, for children too', async () => {
    const dir = await tempDir()
    const oldBin = path.join(dir, 'old-bin')
    mkdirSync(oldBin)
    // An "old node": answers version questions as Node 20 would, runs nothing else.
    writeFileSync(path.join(oldBin, 'node'), '#!/bin/sh\ncase "$*" in *versions.node*) echo 20;; --version) echo v20.0.0;; *) exit 99;; esac\n')
    chmodSync(path.join(oldBin, 'node'), 0o755)
    const arch = process.arch === 'arm64' ? 'arm64' : 'x64'
    const cached = path.join(dir, 'cache', `${release}-linux-${arch}`, 'bin')
    mkdirSync(cached, {recursive: true})
    // Stands for the downloaded release: says its version, as the script checks before trusting it.
    writeFileSync(path.join(cached, 'node'), `#!/bin/sh\ncase "$*" in *versions.node*) echo ${release};; *) exit 99;; esac\n`)
    chmodSync(path.join(cached, 'node'), 0o755)

    const run = (pathVariable: string) =>
      spawnSync('bash', ['scripts/node-runtime.sh', 'bash', '-c', 'node -p process.versions.node; command -v node'], {
        cwd: ROOT,
        encoding: 'utf8',
        env: {...process.env, PATH: pathVariable, DBB_NODE_CACHE: path.join(dir, 'cache')},
      })

    const chosen = run(`${oldBin}:${process.env.PATH}`)
    expect({code: chosen.status, stderr: chosen.stderr}).toEqual({code: 0, stderr: ''})
    expect(chosen.stdout.split('\n').slice(0, 2)).toEqual([release, path.join(cached, 'node')])

    // A machine whose node is recent enough is left alone (no download, PATH unchanged).
    const current = run(`${path.dirname(process.execPath)}:${process.env.PATH}`)
    expect(current.status).toBe(0)
    expect(current.stdout.split('\n')[1]).toBe(path.join(path.dirname(process.execPath), 'node'))
  })

  // npm warns about engines only at install time, which a cron job never shows anyone.
  it('an older Node is named on stderr by every command a person or a job runs, never by the wal commands PostgreSQL runs', async () => {
    const dir = await tempDir()
    const asNode20 = path.join(dir, 'as-node-20.js')
    writeFileSync(asNode20, "Object.defineProperty(process.versions, 'node', {value: '20.20.2'})\n")
    const dbb = (args: string[], preload: string[] = []) =>
      spawnSync(process.execPath, [...preload, path.join(ROOT, 'bin', 'run.js'), ...args], {encoding: 'utf8', env: {...process.env, BACKUP_LOCAL_DIR: dir}})

    for (const args of [['--version'], ['backup', 'list', '--json']]) {
      const old = dbb(args, ['--require', asNode20])
      expect([args, old.status, old.stderr]).toEqual([args, 0, `Warning: dbb supports Node.js >=${floor} and this is Node 20.20.2. It runs, but untested: COMPRESSION=zstd needs the zstd program, and memory and speed are not what BENCHMARKS.md measured. Install Node ${floor} (README, "Install").\n`])
      // stdout stays what a script parses.
      expect(old.stdout).toBe(dbb(args).stdout)
      expect(dbb(args).stderr).toBe('')
    }

    const segment = path.join(dir, '000000010000000000000001')
    writeFileSync(segment, Buffer.alloc(1024))
    const push = dbb(['wal', 'push', segment], ['--require', asNode20])
    expect([push.status, push.stderr]).toEqual([0, expect.stringContaining('"event":"wal.pushed"')])
    expect(push.stderr).not.toMatch(/Warning|Node/)
  })
})

