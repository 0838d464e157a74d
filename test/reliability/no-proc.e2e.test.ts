import {spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import * as fsSync from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync, gzipSync} from 'node:zlib'

import {processAlive} from '../../src/process-alive'
import {queueDirFor, storageIdentity, uploaderLock} from '../../src/wal/foreground'
import {BIN, CliResult, ROOT, cliEnv, collect, tempDir} from '../helpers/cli'
import {isRoot} from '../helpers/postgres'
import {stopLockHolder, waitFor} from '../helpers/wal'

const FOREGROUND = path.join(ROOT, 'bin', 'dbb-wal')

/**
 * Each command in a mount namespace of its own whose /proc is an empty tmpfs (a hardened container,
 * a sandbox that mounts no /proc), in the same pid namespace as the test, which can therefore see
 * and kill what it starts. What it starts in turn (the detached uploader, the prefetcher) inherits
 * the namespace, so it sees no /proc either.
 */
const WITHOUT_PROC = ['unshare', ...(isRoot ? [] : ['--user', '--map-root-user']), '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$@"', 'sh']
function withoutProc(command: string, args: string[], env: Record<string, string | undefined>, cwd: string): Promise<CliResult> {
  return collect(spawn(WITHOUT_PROC[0], [...WITHOUT_PROC.slice(1), command, ...args], {env: cliEnv({DBB_NODE: process.execPath, ...env}), cwd, stdio: ['ignore', 'pipe', 'pipe']}))
}

/**
 * Without /proc there is no process start time, so dbb's locks (the spool's uploader, the prefetch
 * queue's prefetcher) fall back to the pid alone, in Node (src/process-alive.ts) and in bin/dbb-wal
 * (holder_runs). What must still hold: a SIGKILLed holder is taken over and nothing is lost, a live
 * one is served, and every byte stored or restored is the segment's.
 */
describe('without /proc: locks judged by the pid alone', () => {
  let workDir: string
  let storeDir: string
  let spoolDir: string

  const segmentName = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`

  beforeEach(async () => {
    workDir = await tempDir('dbb-noproc-')
    storeDir = path.join(workDir, 'store')
    spoolDir = path.join(workDir, 'spool')
    await fs.mkdir(path.join(workDir, 'pg_wal', 'archive_status'), {recursive: true})
    await fs.mkdir(path.join(storeDir, 'wal'), {recursive: true})
  })

  afterEach(async () => {
    await stopLockHolder(path.join(spoolDir, 'uploader.pid'))
    for (const queue of await fs.readdir(path.join(spoolDir, 'fetch-queue')).catch(() => [] as string[])) {
      await stopLockHolder(path.join(spoolDir, 'fetch-queue', queue, 'uploader.pid'))
    }

    await fs.rm(workDir, {recursive: true, force: true})
  })

  it('the commands under test see an empty /proc', async () => {
    expect(await withoutProc('sh', ['-c', 'ls -A /proc | wc -l'], {}, workDir)).toMatchObject({code: 0, stdout: '0\n'})
  })

  it('async archiving: an uploader SIGKILLed while storage is down is taken over by the next push, and every segment is stored byte for byte', async () => {
    const contents = new Map<number, Buffer>()
    for (const n of [1, 2, 3]) {
      contents.set(n, Buffer.concat([randomBytes(256 * 1024), Buffer.alloc(768 * 1024)]))
      await fs.writeFile(path.join(workDir, 'pg_wal', segmentName(n)), contents.get(n)!)
    }

    // Storage down: a file where its directory should be.
    const blocked = path.join(workDir, 'blocked')
    await fs.writeFile(blocked, '')
    const env = {BACKUP_LOCAL_DIR: path.join(blocked, 'store'), WAL_SPOOL_DIR: spoolDir}
    const push = (n: number) => withoutProc(process.execPath, [BIN, 'wal', 'push', '--async', `pg_wal/${segmentName(n)}`], env, workDir)
    for (const n of [1, 2]) expect(await push(n)).toMatchObject({code: 0})
    await waitFor('the uploader to report its failure', async () => (fsSync.existsSync(path.join(spoolDir, 'uploader.error')) ? true : undefined))
    const first = uploaderLock(spoolDir)
    // The fallback under test: the lock names its holder by pid, with no start time to read.
    expect(first).toMatchObject({pid: expect.any(Number)})
    expect(first?.startTime).toBeUndefined()
    process.kill(first!.pid, 'SIGKILL')
    await waitFor('the uploader to die', async () => (processAlive(first!.pid) ? undefined : true))

    // Storage back; PostgreSQL's next push finds the holder gone and starts an uploader that takes the spool over.
    await fs.rm(blocked)
    await fs.mkdir(path.join(blocked, 'store', 'wal'), {recursive: true})
    expect(await push(3)).toMatchObject({code: 0})
    for (const [n, content] of contents) {
      const object = await waitFor(`segment ${n} stored`, async () => {
        const bytes = await fs.readFile(path.join(blocked, 'store', 'wal', `${segmentName(n)}.gz`)).catch(() => undefined)
        return bytes && gunzipSync(bytes)
      })
      expect([n, object.equals(content)]).toEqual([n, true])
    }

    const second = uploaderLock(spoolDir)
    if (second) expect(second.pid).not.toBe(first!.pid)
    expect((await fs.readdir(spoolDir)).filter((entry) => /^[0-9A-F]{24}$/.test(entry))).toEqual([])
  }, 120_000)

  it("restore_command through bin/dbb-wal: the prefetcher's queue is served, its holder judged by the pid alone", async () => {
    const contents = new Map<number, Buffer>()
    for (const n of [1, 2, 3]) {
      contents.set(n, randomBytes(64 * 1024))
      await fs.writeFile(path.join(storeDir, 'wal', `${segmentName(n)}.gz`), gzipSync(contents.get(n)!))
    }

    const env = {WAL_SPOOL_DIR: spoolDir, WAL_PREFETCH: '2'}
    const fetch = (n: number) => withoutProc(FOREGROUND, ['fetch', '--storage', 'local', '--local-dir', storeDir, segmentName(n), 'pg_wal/RECOVERYXLOG'], env, workDir)
    const delivered = () => fs.readFile(path.join(workDir, 'pg_wal', 'RECOVERYXLOG'))

    // The first request goes to Node, which starts the prefetcher (detached, in the same namespace).
    const first = await fetch(1)
    expect(first.code).toBe(0)
    expect(first.stdout).not.toContain('(dbb-wal)')
    expect((await delivered()).equals(contents.get(1)!)).toBe(true)
    const queue = queueDirFor(spoolDir, storageIdentity({STORAGE_BACKEND: 'local', BACKUP_LOCAL_DIR: storeDir}))
    const lock = uploaderLock(queue)
    expect(lock?.startTime).toBeUndefined()
    expect(processAlive(lock!.pid)).toBe(true)
    // Published with its pid and no start time: what the sh compares its lock with.
    expect((await fs.readFile(path.join(queue, 'identity'), 'utf8')).split('\n')[1]).toBe(`${lock!.pid} `)

    await waitFor('the prefetcher to queue segment 3', async () => (fsSync.existsSync(path.join(queue, segmentName(3))) ? true : undefined))
    for (const n of [2, 3]) {
      const served = await fetch(n)
      expect(served).toMatchObject({code: 0, stdout: `Restored ${segmentName(n)} from the prefetch queue (dbb-wal)\n`})
      expect((await delivered()).equals(contents.get(n)!)).toBe(true)
    }

    // The prefetcher SIGKILLed: its pid is gone, so the sh no longer serves its queue, and Node (a new prefetcher) answers.
    process.kill(lock!.pid, 'SIGKILL')
    await waitFor('the prefetcher to die', async () => (processAlive(lock!.pid) ? undefined : true))
    contents.set(4, randomBytes(64 * 1024))
    await fs.writeFile(path.join(storeDir, 'wal', `${segmentName(4)}.gz`), gzipSync(contents.get(4)!))
    const afterKill = await fetch(4)
    expect(afterKill.code).toBe(0)
    expect(afterKill.stdout).not.toContain('(dbb-wal)')
    expect((await delivered()).equals(contents.get(4)!)).toBe(true)
  }, 120_000)
})
