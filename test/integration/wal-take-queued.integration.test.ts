import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {takeQueued} from '../../src/wal/prefetch'
import {tempDir} from '../helpers/cli'

/**
 * restore_command takes a prefetched segment from the queue: a rename when the queue shares pg_wal's
 * filesystem, a copy when it does not (a spool on tmpfs, pg_wal on a volume). Either way the file
 * appears in pg_wal only complete, leaves the queue, and nothing temporary stays behind.
 */
describe('takeQueued', () => {
  const segment = '00000001000000000000002A'
  const bytes = randomBytes(2 * 1024 * 1024)
  const cleanup: string[] = []

  afterAll(async () => {
    for (const directory of cleanup) await fs.rm(directory, {recursive: true, force: true})
  })

  const queueIn = async (parent: string) => {
    const queue = await fs.mkdtemp(path.join(parent, 'dbb-queue-'))
    cleanup.push(queue)
    return queue
  }

  const pgWal = async () => {
    const directory = await tempDir('dbb-take-queued-')
    cleanup.push(directory)
    return directory
  }

  it.each([
    ['on the same filesystem (rename)', () => tempDir('dbb-queue-')],
    ['on another filesystem (tmpfs queue: copy, then rename)', () => queueIn('/dev/shm')],
  ])('a queued segment %s reaches pg_wal whole and leaves the queue', async (_case, makeQueue) => {
    const queue = await makeQueue()
    cleanup.push(queue)
    const walDir = await pgWal()
    if (_case.includes('another')) expect((await fs.stat(queue)).dev).not.toBe((await fs.stat(walDir)).dev)
    await fs.writeFile(path.join(queue, segment), bytes)
    const destination = path.join(walDir, 'RECOVERYXLOG')

    expect(await takeQueued(queue, segment, destination)).toBe(true)
    expect((await fs.readFile(destination)).equals(bytes)).toBe(true)
    expect(await fs.readdir(queue)).toEqual([])
    expect(await fs.readdir(walDir)).toEqual(['RECOVERYXLOG'])
  })

  it('a segment that is not queued is false, and pg_wal is untouched', async () => {
    const queue = await queueIn('/dev/shm')
    const walDir = await pgWal()
    expect(await takeQueued(queue, segment, path.join(walDir, 'RECOVERYXLOG'))).toBe(false)
    expect(await fs.readdir(walDir)).toEqual([])
  })

  it('a copy that cannot be published fails loudly and leaves neither a partial file nor a lost segment', async () => {
    const queue = await queueIn('/dev/shm')
    const walDir = await pgWal()
    await fs.writeFile(path.join(queue, segment), bytes)
    // A directory where the file must go: the copy is written, the rename over it fails.
    await fs.mkdir(path.join(walDir, 'RECOVERYXLOG'))
    await expect(takeQueued(queue, segment, path.join(walDir, 'RECOVERYXLOG'))).rejects.toMatchObject({code: 'EISDIR'})
    expect(await fs.readdir(walDir)).toEqual(['RECOVERYXLOG'])
    // Still queued: the next restore_command for it can take it.
    expect((await fs.readFile(path.join(queue, segment))).equals(bytes)).toBe(true)
  })
})
