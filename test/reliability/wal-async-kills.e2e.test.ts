import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {BIN} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/wal'

/**
 * Asynchronous archiving attacked with SIGKILL while a real PostgreSQL archives through it: the
 * detached uploader (mid-read-ahead copy, mid-upload, with a spool holding segments) and the
 * foreground `wal push --async` processes (between spool write and exit) are killed again and again.
 * PostgreSQL retries what was not acknowledged; afterwards every segment it wrote is archived and
 * every archived segment's bytes equal the segment in pg_wal (kept there by wal_keep_size): nothing
 * lost, nothing truncated, nothing acknowledged that was not durable.
 */
describe('wal push --async under SIGKILL (real PostgreSQL)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  let spoolDir: string

  beforeAll(async () => {
    storeDir = await makeServerOwnedDir('dbb-kill-store-')
    spoolDir = await makeServerOwnedDir('dbb-kill-spool-')
    cluster = await startPostgres({
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        wal_keep_size: "'2GB'",
        max_wal_size: "'4GB'",
        archive_command: `'BACKUP_LOCAL_DIR=${storeDir} WAL_SPOOL_DIR=${spoolDir} WAL_ASYNC_PARALLEL=2 ${process.execPath} ${BIN} wal push --async %p'`,
      },
    })
  })

  afterAll(async () => {
    await cluster?.destroy()
    for (const pid of await dbbProcesses()) kill(pid)
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(spoolDir, {recursive: true, force: true})
  })

  const kill = (pid: number) => {
    try {
      process.kill(pid, 'SIGKILL')
      return true
    } catch {
      return false
    }
  }

  /** This test's dbb processes (pushes and uploader): those whose environment names this spool. */
  async function dbbProcesses(): Promise<number[]> {
    const pids: number[] = []
    for (const entry of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      const environ = await fs.readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '')
      const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
      if (environ.split('\0').includes(`WAL_SPOOL_DIR=${spoolDir}`) && cmdline.includes(BIN)) pids.push(Number(entry))
    }

    return pids
  }

  it('after repeated kills of uploader and pushes, every segment is archived with its exact bytes', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE filler (id int, payload text)')
    let killing = true
    let kills = 0
    const killer = (async () => {
      while (killing) {
        for (const pid of await dbbProcesses()) if (kill(pid)) kills += 1
        await new Promise((resolve) => setTimeout(resolve, 150 + Math.random() * 250))
      }
    })()
    const segments: string[] = []
    for (let round = 0; round < 12; round++) {
      await db.psql(`INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g`)
      segments.push(await db.psql('SELECT pg_walfile_name(pg_switch_wal())'))
    }

    await new Promise((resolve) => setTimeout(resolve, 3000))
    killing = false
    await killer
    expect(kills).toBeGreaterThan(0)

    // PostgreSQL keeps retrying what was not acknowledged; one more segment starts an uploader for anything left spooled.
    await db.psql(`INSERT INTO filler VALUES (0, 'last')`)
    const last = await db.psql('SELECT pg_walfile_name(pg_switch_wal())')
    await waitFor(
      'every segment archived and the spool drained',
      async () => {
        const archived = await db.psql('SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver')
        const spooled = (await fs.readdir(spoolDir)).filter((entry) => /^[0-9A-F]{24}$/.test(entry))
        return archived >= last && spooled.length === 0 ? true : undefined
      },
      240_000,
    )

    const stored = (await fs.readdir(path.join(storeDir, 'wal'))).filter((entry) => /^[0-9A-F]{24}\.gz$/.test(entry)).map((entry) => entry.slice(0, 24)).sort()
    for (const name of [...segments, last]) expect(stored).toContain(name)
    // No gap from the first archived segment to the last.
    const number = (name: string) => Number.parseInt(name.slice(8, 16), 16) * 256 + Number.parseInt(name.slice(16, 24), 16)
    expect(number(stored.at(-1)!) - number(stored[0]) + 1).toBe(stored.length)
    for (const name of stored) {
      const original = await fs.readFile(path.join(db.dataDir, 'pg_wal', name))
      expect(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${name}.gz`))).equals(original)).toBe(true)
    }
  }, 360_000)
})
