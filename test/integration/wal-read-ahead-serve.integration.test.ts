import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {uploaderLock} from '../../src/wal/foreground'
import {READ_AHEAD_RETRY_MS, readAheadProbe, startSpoolService} from '../../src/wal/spool-service'
import {tempDir} from '../helpers/cli'
import {captureLogger, waitFor} from '../helpers/serve'

/**
 * dbb serve's read-ahead (WAL_READ_AHEAD_DIR) must never make a push wait for markers that will not
 * come: every push from that pg_wal waits up to 5 s for one while serve's lock names the directory.
 * So serve names it only while it can read it, and stops naming it at the first read error.
 */
describe('dbb serve read-ahead of pg_wal (WAL_READ_AHEAD_DIR)', () => {
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dbb-read-ahead-')
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('is refused, with the reason, for a missing directory, one that is not pg_wal, or another user\'s; named as a push names it', async () => {
    expect(await readAheadProbe(path.join(dir, 'absent'))).toEqual({reason: expect.stringMatching(/ENOENT.*absent/)})
    const notPgWal = path.join(dir, 'not-pg-wal')
    await fs.mkdir(notPgWal)
    expect(await readAheadProbe(notPgWal)).toEqual({reason: expect.stringMatching(/ENOENT.*archive_status/)})

    const walDir = path.join(dir, 'probe', 'pg_wal')
    await fs.mkdir(path.join(walDir, 'archive_status'), {recursive: true})
    const {uid: owner} = await fs.stat(walDir)
    expect(await readAheadProbe(walDir, owner + 1)).toEqual({reason: `it belongs to uid ${owner} and dbb serve runs as uid ${owner + 1}; run serve as the server's OS user (uid ${owner})`})
    // Named as a push names it: the data directory resolved (the cwd is physical), pg_wal kept even
    // when it is a link to another volume (initdb --waldir).
    await fs.symlink(path.join(dir, 'probe'), path.join(dir, 'linked-data'))
    expect(await readAheadProbe(path.join(dir, 'linked-data', 'pg_wal'), owner)).toEqual({dir: walDir})
    await fs.mkdir(path.join(dir, 'data-with-waldir'))
    await fs.symlink(walDir, path.join(dir, 'data-with-waldir', 'pg_wal'))
    expect(await readAheadProbe(path.join(dir, 'data-with-waldir', 'pg_wal'), owner)).toEqual({dir: path.join(dir, 'data-with-waldir', 'pg_wal')})
  })

  it('starts without read-ahead while pg_wal is missing, reads ahead once it appears, and stops at a read error', async () => {
    const spoolDir = path.join(dir, 'spool')
    const storeDir = path.join(dir, 'store')
    const dataDir = path.join(dir, 'data')
    const walDir = path.join(dataDir, 'pg_wal')
    await fs.mkdir(storeDir)
    const {logger, lines} = captureLogger()
    const service = startSpoolService({config: {spoolDir, maxSegments: 64, parallel: 4, prefetch: 0, readAheadDir: walDir}, storage: new LocalBackend(storeDir), logger})
    try {
      // Serve started before the server's initdb: it holds the spool and promises no read-ahead.
      await waitFor(() => (uploaderLock(spoolDir)?.pid === process.pid ? true : undefined), 20_000, 'the lock')
      expect(uploaderLock(spoolDir)?.readAheadDir).toBe('')
      expect(lines().find((line) => line.event === 'wal.read_ahead_unavailable')?.msg).toMatch(/WAL_READ_AHEAD_DIR: cannot read ahead .*pg_wal: .*ENOENT: no such file or directory/)

      // A second look finds it missing too: not logged again (the lock is given back and taken again at each look).
      await new Promise((resolve) => setTimeout(resolve, READ_AHEAD_RETRY_MS + 1000))
      expect(uploaderLock(spoolDir)).toMatchObject({pid: process.pid, readAheadDir: ''})
      expect(lines().filter((line) => line.event === 'wal.read_ahead_unavailable')).toHaveLength(1)

      // pg_wal appears with a ready segment: serve looks again, names it in the lock, stores the segment ahead and leaves the marker.
      await fs.mkdir(path.join(walDir, 'archive_status'), {recursive: true})
      const name = '000000010000000000000001'
      const content = randomBytes(256 * 1024)
      await fs.writeFile(path.join(walDir, name), content)
      await fs.writeFile(path.join(walDir, 'archive_status', `${name}.ready`), '')
      await waitFor(() => (uploaderLock(spoolDir)?.readAheadDir === walDir ? true : undefined), READ_AHEAD_RETRY_MS + 20_000, 'the lock to name pg_wal')
      await waitFor(async () => (await fs.stat(path.join(spoolDir, 'uploaded', name)).catch(() => undefined)) && true, 20_000, 'the marker')
      expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${name}.gz`))).equals(content)).toBe(true)

      // A ready segment that cannot be read (here a directory under its name: EISDIR; in the field
      // EACCES or EIO): serve takes back its promise at once, so no push waits for it.
      const unreadable = '000000010000000000000002'
      await fs.mkdir(path.join(walDir, unreadable))
      await fs.writeFile(path.join(walDir, 'archive_status', `${unreadable}.ready`), '')
      await waitFor(() => (uploaderLock(spoolDir)?.readAheadDir === '' ? true : undefined), 20_000, 'the lock to stop naming pg_wal')
      expect(lines().find((line) => line.event === 'wal.read_ahead_failed')?.msg).toMatch(new RegExp(`cannot read ${unreadable} ahead from .*pg_wal: .*EISDIR`))
      await expect(fs.stat(path.join(spoolDir, 'uploaded', unreadable))).rejects.toThrow(/ENOENT/)

      // Meanwhile the spool is still uploaded (what the pushes copy there now).
      const spooled = '000000010000000000000003'
      const spooledContent = randomBytes(64 * 1024)
      await fs.writeFile(path.join(spoolDir, spooled), spooledContent)
      await waitFor(async () => (await fs.stat(path.join(storeDir, 'wal', `${spooled}.gz`)).catch(() => undefined)) && true, 20_000, 'the spooled segment stored')
      expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${spooled}.gz`))).equals(spooledContent)).toBe(true)

      // Once PostgreSQL archived it (its .ready gone), serve reads ahead again.
      await fs.rm(path.join(walDir, 'archive_status', `${unreadable}.ready`))
      await waitFor(() => (uploaderLock(spoolDir)?.readAheadDir === walDir ? true : undefined), READ_AHEAD_RETRY_MS + 20_000, 'the lock to name pg_wal again')
    } finally {
      await service.stop()
    }

    expect(uploaderLock(spoolDir)).toBeUndefined()
  }, 120_000)
})
