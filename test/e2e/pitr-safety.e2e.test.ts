import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {EXIT_WAL_FETCH_FATAL} from '../../src/errors'
import {runCli} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {
  RestoredServer,
  archivedWal,
  archivingSettings,
  postmasterRunning,
  startRestoredServer,
  switchWalAndWaitArchived,
  waitFor,
  waitForPromotion,
} from '../helpers/wal'

// Each restore replays several segments, one `dbb wal fetch` process each (seconds apiece on a loaded 2-core machine).
const RECOVERY_TEST_TIMEOUT_MS = 480_000

/**
 * What makes point-in-time recovery safe to rely on, with a real PostgreSQL and archive_command =
 * dbb wal push: a damaged segment aborts recovery instead of ending it early, and drills restored
 * from production's archive never write into it.
 */
describe('point-in-time recovery safety (real PostgreSQL)', () => {
  let cluster: PgCluster | undefined
  let storeDir: string
  const scratch: string[] = []
  const servers: RestoredServer[] = []

  beforeEach(async () => {
    storeDir = await makeServerOwnedDir('dbb-pitr-safety-store-')
    cluster = await startPostgres({settings: archivingSettings(storeDir)})
  })

  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop()
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    for (const directory of scratch.splice(0)) await fs.rm(directory, {recursive: true, force: true})
  })

  const storageEnv = () => ({BACKUP_LOCAL_DIR: storeDir})

  it('one flipped byte in a middle archived segment aborts recovery (server down, error in its log); with the segment repaired it replays everything and promotes', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE batches (batch int, id int)')
    expect((await runCli(['backup', 'run', '--type', 'base'], {...db.dbbEnv(), ...storageEnv()})).code).toBe(0)
    const segments: string[] = []
    for (const batch of [1, 2, 3]) {
      await db.psql(`INSERT INTO batches SELECT ${batch}, g FROM generate_series(1, 1000) g`)
      segments.push(await switchWalAndWaitArchived(db, storeDir))
    }

    await db.stop()
    await fs.rm(db.dataDir, {recursive: true, force: true})
    expect((await runCli(['restore', '--type', 'base', 'latest', '--pgdata', db.dataDir], storageEnv())).code).toBe(0)

    // Damage the middle segment's archived copy: one byte, where gunzip notices it.
    const middle = path.join(storeDir, 'wal', `${segments[1]}.gz`)
    const good = await fs.readFile(middle)
    const damaged = Buffer.from(good)
    for (let offset = Math.floor(good.length / 2); ; offset += 1) {
      damaged[offset] ^= 0x10
      if (gunzipFails(damaged)) break
      damaged[offset] ^= 0x10
    }

    await fs.writeFile(middle, damaged)
    const logFile = path.join(db.baseDir, 'server.log')
    const logBefore = (await fs.readFile(logFile, 'utf8')).length
    await db.start().catch(() => {}) // pg_ctl may report the start before recovery reaches the damage
    await waitFor('the server to stop on the damaged segment', async () => ((await postmasterRunning(db, db.dataDir)) ? undefined : true), 180_000)
    const log = (await fs.readFile(logFile, 'utf8')).slice(logBefore)
    expect(log).toContain(`could not restore file "${segments[1]}" from archive: child process exited with exit code ${EXIT_WAL_FETCH_FATAL}`)
    expect(log).toMatch(/the archived copy is damaged/)
    expect(log).not.toMatch(/database system is ready to accept connections|selected new timeline ID/)
    expect(await archivedWal(storeDir)).not.toContain('00000002.history')

    // The archive repaired (e.g. from a replica of the bucket): the same restored directory now replays to the end.
    await fs.writeFile(middle, good)
    await db.start()
    await waitForPromotion(db)
    expect(await db.psql('SELECT batch, count(*) FROM batches GROUP BY batch ORDER BY batch')).toBe('1|1000\n2|1000\n3|1000')
  }, RECOVERY_TEST_TIMEOUT_MS)

  it('drills (restores that promote) do not archive into the location; --archive does; --target-timeline pins the timeline', async () => {
    const db = cluster!
    await db.psql('CREATE TABLE events (id int, phase text)')
    expect((await runCli(['backup', 'run', '--type', 'base'], {...db.dbbEnv(), ...storageEnv()})).code).toBe(0)
    await db.psql(`INSERT INTO events SELECT g, 'before' FROM generate_series(1, 100) g`)
    const target = await db.psql('SELECT clock_timestamp()')
    await new Promise((resolve) => setTimeout(resolve, 50))
    await db.psql(`INSERT INTO events SELECT g, 'after' FROM generate_series(101, 200) g`)
    await switchWalAndWaitArchived(db, storeDir)
    const archivedBefore = await archivedWal(storeDir)

    const drill = async (flags: string[]) => {
      const directory = await makeServerOwnedDir('dbb-drill-')
      scratch.push(directory, `${directory}.log`)
      const restore = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', directory, '--force', '--target-time', target, ...flags], storageEnv())
      expect(restore.code).toBe(0)
      const server = await startRestoredServer(db, directory)
      servers.push(server)
      try {
        await waitFor('the drill to promote', async () => ((await server.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f' ? true : undefined), 60_000)
        expect(await server.psql(`SELECT phase, count(*) FROM events GROUP BY phase`)).toBe('before|100')
        // What a drill does after promotion: writes, and WAL switches that would be archived.
        await server.psql(`INSERT INTO events SELECT g, 'drill' FROM generate_series(1, 1000) g`)
        await server.psql('SELECT pg_switch_wal()')
        return {restore, server, archiveMode: await server.psql('SHOW archive_mode')}
      } catch (error) {
        await server.stop()
        throw error
      }
    }

    for (const round of [1, 2]) {
      const {restore, server, archiveMode} = await drill([])
      expect(restore.stdout).toMatch(/Archiving is off in the restored cluster .* restore with --archive/)
      expect(archiveMode).toBe('off')
      await new Promise((resolve) => setTimeout(resolve, 2000))
      await server.stop()
      expect({round, archived: await archivedWal(storeDir)}).toEqual({round, archived: archivedBefore})
    }

    // A real disaster recovery: the restored cluster is the new primary and archives its new timeline.
    const {restore, server, archiveMode} = await drill(['--archive', '--json'])
    expect(JSON.parse(restore.stdout)).toMatchObject({archiving: 'inherited', targetTimeline: null})
    expect(archiveMode).toBe('on')
    await waitFor('the new timeline in the archive', async () => ((await archivedWal(storeDir)).includes('00000002.history') ? true : undefined))
    await server.stop()

    // With a foreign timeline in the archive, --target-timeline current stays on the base backup's timeline.
    const pinned = await makeServerOwnedDir('dbb-drill-pinned-')
    scratch.push(pinned, `${pinned}.log`)
    const restorePinned = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', pinned, '--force', '--target-timeline', 'current', '--json'], storageEnv())
    expect(restorePinned.code).toBe(0)
    expect(JSON.parse(restorePinned.stdout)).toMatchObject({targetTimeline: 'current', archiving: 'off'})
    expect(await fs.readFile(path.join(pinned, 'postgresql.auto.conf'), 'utf8')).toContain(`recovery_target_timeline = 'current'`)
    const replay = await startRestoredServer(db, pinned)
    servers.push(replay)
    try {
      await waitFor('the replay to promote', async () => ((await replay.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f' ? true : undefined), 60_000)
      expect(await replay.psql(`SELECT phase, count(*) FROM events GROUP BY phase ORDER BY phase`)).toBe('after|100\nbefore|100')
    } finally {
      await replay.stop()
    }

    const bad = await runCli(['restore', '--type', 'base', 'latest', '--pgdata', pinned, '--force', '--target-timeline', 'newest'], storageEnv())
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--target-timeline: "newest" is not a timeline/)
  }, RECOVERY_TEST_TIMEOUT_MS)
})

function gunzipFails(bytes: Buffer): boolean {
  try {
    gunzipSync(bytes)
    return false
  } catch {
    return true
  }
}
