import {spawn} from 'node:child_process'
import {existsSync, readdirSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {ROOT, cliEnv, collect} from '../helpers/cli'

/**
 * `npm run demo`, the README's first command: on this machine (PostgreSQL and node_modules present)
 * it builds, starts a throwaway cluster, backs up, lists, restores into a second database and
 * compares them. A user relies on exit 0, the "matches" verdict, the backup files it names, and a
 * stopped cluster afterwards.
 */
describe('npm run demo', () => {
  it('backs up, restores into a second database, finds the data identical and stops the cluster', async () => {
    const child = spawn('bash', [path.join(ROOT, 'scripts', 'demo.sh')], {cwd: ROOT, env: cliEnv({LOG_FORMAT: undefined}), stdio: ['ignore', 'pipe', 'pipe']})
    const timer = setTimeout(() => child.kill('SIGKILL'), 280_000)
    const result = await collect(child).finally(() => clearTimeout(timer))
    const demoDir = /The files are in (\S+):/.exec(result.stdout)?.[1]
    try {
      expect({code: result.code, stderr: result.stderr}).toEqual({code: 0, stderr: expect.not.stringMatching(/Error/)})
      expect(result.stdout).toContain('The restored database matches the original: every table has the same rows and checksum.')
      for (const table of ['customers', 'documents', 'events', 'orders', 'large_objects']) {
        expect(result.stdout).toMatch(new RegExp(`^${table} +\\d+ +[0-9a-f]{32} +same$`, 'm'))
      }

      expect(demoDir).toBeDefined()
      const backups = readdirSync(path.join(demoDir!, 'backups'))
      expect(backups.filter((name) => name.endsWith('.sql.gz'))).toHaveLength(1)
      expect(backups.filter((name) => name.endsWith('.sql.gz.meta.json'))).toHaveLength(1)
      // Stopped: PostgreSQL removes postmaster.pid on a clean shutdown.
      expect(existsSync(path.join(demoDir!, 'pgdata', 'postmaster.pid'))).toBe(false)
    } finally {
      if (demoDir) await fs.rm(demoDir, {recursive: true, force: true})
    }
  }, 300_000)
})
