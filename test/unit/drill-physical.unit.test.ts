import {spawn, spawnSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {PRIVATE_DIR_MARKER, PRIVATE_DIR_PREFIX, privateServerSettings, sweepLeftovers} from '../../src/drill/private-server'
import {majorVersion} from '../../src/drill/server-binaries'
import {captureLogger} from '../helpers/serve'

describe('physical drill helpers', () => {
  it('majorVersion reads the server versions PostgreSQL reports', () => {
    expect(majorVersion('15.18')).toBe(15)
    expect(majorVersion('16beta1')).toBe(16)
    expect(majorVersion('9.6.24')).toBe(9)
    expect(majorVersion('17devel')).toBe(17)
    expect(majorVersion('unknown')).toBeUndefined()
  })

  it('the private server listens on no TCP address and never archives', () => {
    const settings = privateServerSettings({root: '/tmp/x', dataDir: '/tmp/x/data', logFile: '/tmp/x/server.log'}, 54_321)
    expect(settings).toMatchObject({listen_addresses: '', port: '54321', unix_socket_directories: '/tmp/x', archive_mode: 'off', ssl: 'off'})
  })

  describe('sweepLeftovers', () => {
    let tmp: string

    beforeEach(async () => {
      tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-sweep-'))
    })

    afterEach(async () => {
      await fs.rm(tmp, {recursive: true, force: true})
    })

    async function drillDirectory(name: string, pid?: number): Promise<string> {
      const root = path.join(tmp, `${PRIVATE_DIR_PREFIX}${name}`)
      await fs.mkdir(path.join(root, 'data'), {recursive: true})
      if (pid !== undefined) await fs.writeFile(path.join(root, PRIVATE_DIR_MARKER), JSON.stringify({pid, hostname: os.hostname(), backupId: 'b', startedAt: new Date().toISOString()}))
      return root
    }

    it('removes a dead drill\'s marked directory, keeps a live drill\'s and never touches an unmarked one', async () => {
      const deadPid = spawnSync('sh', ['-c', 'echo $$'], {encoding: 'utf8'}).stdout.trim()
      const live = spawn('sleep', ['30'])
      try {
        const dead = await drillDirectory('dead', Number(deadPid))
        const running = await drillDirectory('live', live.pid!)
        const unmarked = await drillDirectory('unmarked')
        const {logger, text} = captureLogger()
        expect(await sweepLeftovers(logger, tmp)).toEqual([dead])
        expect(text()).toContain('left by a physical drill that was killed')
        await expect(fs.stat(dead)).rejects.toThrow()
        expect((await fs.stat(running)).isDirectory()).toBe(true)
        expect((await fs.stat(unmarked)).isDirectory()).toBe(true)
      } finally {
        live.kill('SIGKILL')
      }
    })
  })
})
