import {ChildProcess, spawn, spawnSync} from 'node:child_process'
import {once} from 'node:events'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {PRIVATE_DIR_MARKER, PRIVATE_DIR_PREFIX, privateServerSettings, sweepLeftovers} from '../../src/drill/private-server'
import {majorVersion} from '../../src/drill/server-binaries'
import {ORPHANED_AFTER_MS} from '../../src/leftover-owner'
import {pidScope, processStartedAt} from '../../src/process-alive'
import {captureLogger, waitFor} from '../helpers/serve'

describe('physical drill helpers', () => {
  it('majorVersion reads the server versions PostgreSQL reports', () => {
    expect(majorVersion('15.18')).toBe(15)
    expect(majorVersion('16beta1')).toBe(16)
    expect(majorVersion('9.6.24')).toBe(9)
    expect(majorVersion('17devel')).toBe(17)
    expect(majorVersion('unknown')).toBeUndefined()
  })

  it('the private server listens on no TCP address and never archives', () => {
    const settings = privateServerSettings({root: '/tmp/x', dataDir: '/tmp/x/data', logFile: '/tmp/x/server.log', marker: '/tmp/x/dbb-drill.json'}, 54_321)
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

    async function drillDirectory(name: string, pid?: number, marker: {scope?: string; hostname?: string} = {}): Promise<string> {
      const root = path.join(tmp, `${PRIVATE_DIR_PREFIX}${name}`)
      await fs.mkdir(path.join(root, 'data'), {recursive: true})
      if (pid !== undefined) {
        await fs.writeFile(path.join(root, PRIVATE_DIR_MARKER), JSON.stringify({pid, hostname: os.hostname(), backupId: 'b', startedAt: new Date().toISOString(), ...marker}))
      }

      return root
    }

    /** postmaster.pid as PostgreSQL writes it: pid, data directory, start time (epoch seconds), … */
    async function postmasterFile(root: string, pid: number, startedSeconds: number): Promise<void> {
      await fs.writeFile(path.join(root, 'data', 'postmaster.pid'), `${pid}\n${path.join(root, 'data')}\n${startedSeconds}\n5432\n${root}\n\n`)
    }

    /** Runs `body` with a live process of this user that is not a server (killed after). */
    async function withBystander(body: (child: ChildProcess) => Promise<void>): Promise<void> {
      const child = spawn('sleep', ['60'])
      try {
        await waitFor(() => processStartedAt(child.pid!), 5000, 'the process to start')
        await body(child)
      } finally {
        child.kill('SIGKILL')
      }
    }

    async function exited(child: ChildProcess, withinMs: number): Promise<boolean> {
      if (child.exitCode !== null || child.signalCode !== null) return true
      return Promise.race([once(child, 'exit').then(() => true), sleep(withinMs).then(() => false)])
    }

    const deadPid = () => Number(spawnSync('sh', ['-c', 'echo $$'], {encoding: 'utf8'}).stdout.trim())

    it('never signals a process that only has the pid postmaster.pid names: one that started after the server wrote it is not the server', async () => {
      await withBystander(async (other) => {
        // A drill SIGKILLed an hour ago; its server is gone and the pid now belongs to someone else.
        const dead = await drillDirectory('reused', deadPid(), {scope: pidScope()})
        await postmasterFile(dead, other.pid!, Math.floor(Date.now() / 1000) - 3600)
        const {logger} = captureLogger()
        expect(await sweepLeftovers(logger, tmp)).toEqual([dead])
        expect(await exited(other, 1000)).toBe(false)
      })
    })

    it('stops the server a killed drill left (the process that wrote postmaster.pid), then removes the directory', async () => {
      await withBystander(async (server) => {
        const dead = await drillDirectory('left-running', deadPid(), {scope: pidScope()})
        await postmasterFile(dead, server.pid!, Math.floor(processStartedAt(server.pid!)! / 1000))
        const {logger} = captureLogger()
        expect(await sweepLeftovers(logger, tmp)).toEqual([dead])
        expect(await exited(server, 5000)).toBe(true)
        expect(server.signalCode).toBe('SIGQUIT')
      })
    })

    it("a drill of another pid namespace (a sibling container sharing TMPDIR): kept while its marker is touched, removed once untouched for ORPHANED_AFTER_MS, its pid never signalled here", async () => {
      await withBystander(async (other) => {
        const startedSeconds = Math.floor(processStartedAt(other.pid!)! / 1000)
        // The pid is dead here and the postmaster.pid even looks like this process's: neither means anything across namespaces.
        const fresh = await drillDirectory('sibling-fresh', deadPid(), {scope: '00000000.1'})
        await postmasterFile(fresh, other.pid!, startedSeconds)
        const stale = await drillDirectory('sibling-stale', deadPid(), {scope: '00000000.1'})
        await postmasterFile(stale, other.pid!, startedSeconds)
        const legacyElsewhere = await drillDirectory('legacy-other-host', deadPid(), {hostname: 'another-host'})
        const untouched = new Date(Date.now() - ORPHANED_AFTER_MS - 1000)
        await fs.utimes(path.join(stale, PRIVATE_DIR_MARKER), untouched, untouched)
        const {logger} = captureLogger()
        expect(await sweepLeftovers(logger, tmp)).toEqual([stale])
        expect(await exited(other, 1000)).toBe(false)
        expect((await fs.stat(fresh)).isDirectory()).toBe(true)
        // An older dbb's marker from another host has no heartbeat: gone once its age passes the limit.
        expect(await sweepLeftovers(logger, tmp, Date.now() + ORPHANED_AFTER_MS + 1000)).toEqual([fresh, legacyElsewhere].sort())
        expect(await exited(other, 1000)).toBe(false)
      })
    })

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
