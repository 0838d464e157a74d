import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {CliResult, runCli, tempDir} from '../helpers/cli'
import {ArchiveModel, CODECS, checkArchive, localStore, segmentName, sha, writeOldBackup, writeSourceSegment} from '../helpers/crash-invariants'
import {PgCluster, isRoot, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * The storage-fault matrix on the local backend (issue 11): a full disk (a small tmpfs mounted by
 * the test — the suite runs as root; without root this FAILS, it is never skipped), a read-only
 * filesystem (the tmpfs remounted read-only) and a missing directory (an unmounted volume), for
 * `backup run`, `prune`, `wal push` and `wal fetch`. Each must exit with its documented code and
 * a message naming the cause, and afterwards the archive invariants hold
 * (test/helpers/crash-invariants.ts): nothing partial listed, no backup lost, every archived WAL
 * segment whole.
 *
 * `wal fetch` is PostgreSQL's restore_command: exit 1 means "not in the archive" and ends recovery,
 * so any other failure must exit above 125 (issue 11, hole 4). Those expectations are the tests
 * named "restore_command contract"; they fail until the wal-fetch exit-code fix is merged.
 */
const SEGMENT_BYTES = 4 * 1024 * 1024
const RESTORE_COMMAND_FATAL = 125

function mountTmpfs(dir: string, size: string): void {
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir])
}

function remount(dir: string, mode: 'ro' | 'rw'): void {
  execFileSync('mount', ['-o', `remount,${mode}`, dir])
}

const named = (result: CliResult, pattern: RegExp) => [result.code, pattern.test(result.stderr) ? 'names the cause' : result.stderr]

describe.each(CODECS)('storage-fault matrix: local backend (full disk, read-only filesystem, missing directory), $label', (codec) => {
  let cluster: PgCluster
  let workDir: string
  let mountPoint: string
  let destMount: string
  let store: string
  let model: ArchiveModel
  let archived: {name: string; sha256: string}
  let big: {name: string; file: string}
  const mounted: string[] = []
  let codecEnv: Record<string, string>

  const storageEnv = () => ({BACKUP_LOCAL_DIR: store, ...codecEnv})
  const dbEnv = (database = 'shop') => ({...cluster.dbbEnv(database), ...storageEnv()})

  beforeAll(async () => {
    // Not a skip: a CI without root or mount must fail loudly, or the disk-full guarantee goes untested.
    if (!isRoot) throw new Error('the local storage-fault matrix needs root to mount a small tmpfs (run the suite as root, as CI does)')
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 2000)
    await cluster.psql('CREATE DATABASE big')
    await cluster.psql(`CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload FROM generate_series(1, 100000) g`, 'big')
    workDir = await tempDir('dbb-local-faults-')
    await fs.mkdir(path.join(workDir, 'keys'))
    codecEnv = codec.env(path.join(workDir, 'keys'))
    mountPoint = path.join(workDir, 'volume')
    destMount = path.join(workDir, 'pg_wal')
    await fs.mkdir(mountPoint)
    await fs.mkdir(destMount)
    mountTmpfs(mountPoint, '3m')
    mounted.push(mountPoint)
    mountTmpfs(destMount, '1m')
    mounted.push(destMount)
    store = path.join(mountPoint, 'backups')
    await fs.mkdir(store)
    const local = localStore(store)
    model = {store: {...local, env: {...local.env, ...codecEnv}}, mustSurvive: new Map(), walSources: new Map()}

    const first = await runCli(['backup', 'run', '--json'], dbEnv())
    expect([first.code, first.stderr]).toEqual([0, expect.any(String)])
    const {metadata} = JSON.parse(first.stdout) as {metadata: {id: string; sha256: string}}
    model.mustSurvive.set(metadata.id, metadata.sha256)

    // A small archived segment to fetch, and a source segment larger than the free space.
    const small = await writeSourceSegment(workDir, segmentName(1), 256 * 1024, 1)
    model.walSources.set(segmentName(1), small.sha256)
    expect((await runCli(['wal', 'push', small.file], storageEnv())).code).toBe(0)
    archived = {name: segmentName(1), sha256: small.sha256}
    expect(await model.store.keys()).toContain(`wal/${archived.name}${codec.walSuffix}`)
    const large = await writeSourceSegment(workDir, segmentName(2), SEGMENT_BYTES, 2)
    model.walSources.set(segmentName(2), large.sha256)
    big = {name: segmentName(2), file: large.file}
  }, 120_000)

  afterAll(async () => {
    for (const dir of mounted.reverse()) execFileSync('umount', [dir])
    await cluster?.destroy()
    if (workDir) await fs.rm(workDir, {recursive: true, force: true})
  })

  afterEach(async () => {
    // The missing-directory cases check once the directory is back (their afterAll).
    if (!isRoot || !existsSync(store)) return
    await checkArchive(model, expect.getState().currentTestName ?? '')
    // No leftovers: every failing write removed its partial file.
    const partials = (await model.store.keys()).filter((key) => key.endsWith('.partial'))
    expect(partials).toEqual([])
  })

  describe('full disk', () => {
    it('backup run: exit 1 naming ENOSPC and the directory; the partial dump removed', async () => {
      const result = await runCli(['backup', 'run'], dbEnv('big'))
      expect(named(result, new RegExp(`no space left on the device holding ${store} \\(ENOSPC\\)`))).toEqual([1, 'names the cause'])
    })

    it('wal push: exit 1 naming ENOSPC (PostgreSQL keeps the segment and retries); nothing under the final name', async () => {
      const result = await runCli(['wal', 'push', big.file], storageEnv())
      expect(named(result, /ENOSPC/)).toEqual([1, 'names the cause'])
      expect(existsSync(path.join(store, 'wal', `${big.name}${codec.walSuffix}`))).toBe(false)
    })

    it('prune: deleting needs no space, it succeeds on a full disk', async () => {
      const filler = path.join(mountPoint, 'filler')
      await fs.writeFile(filler, Buffer.alloc(64 * 1024 * 1024)).catch(() => undefined) // fills the rest of the tmpfs
      try {
        const old = await writeOldBackup(model.store, new Date(Date.UTC(2020, 0, 1))).catch(() => undefined)
        const result = await runCli(['prune', '--json'], storageEnv())
        expect([result.code, result.stderr]).toEqual([0, expect.any(String)])
        if (old) expect(JSON.parse(result.stdout).deleted.map((entry: {id: string}) => entry.id)).toContain(old.id)
      } finally {
        await fs.rm(filler, {force: true})
      }
    })

    it('wal fetch onto a full disk: fails, and the destination holds no partial file under its final name', async () => {
      const big2 = await writeSourceSegment(workDir, segmentName(3), 2 * 1024 * 1024, 3)
      model.walSources.set(segmentName(3), big2.sha256)
      expect((await runCli(['wal', 'push', big2.file], storageEnv())).code).toBe(0)
      const dest = path.join(destMount, 'RECOVERYXLOG')
      const result = await runCli(['wal', 'fetch', segmentName(3), dest], storageEnv())
      expect(result.code).not.toBe(0)
      expect(existsSync(dest)).toBe(false)
      expect(await fs.readdir(destMount)).toEqual([])
    })

    it('restore_command contract: wal fetch onto a full disk exits above 125 (not "not in archive")', async () => {
      const dest = path.join(destMount, 'RECOVERYXLOG')
      const result = await runCli(['wal', 'fetch', segmentName(3), dest], storageEnv())
      expect([result.code! > RESTORE_COMMAND_FATAL, result.code, result.stderr]).toEqual([true, expect.any(Number), expect.stringMatching(/ENOSPC|no space/)])
    })
  })

  describe('read-only filesystem', () => {
    beforeAll(() => remount(mountPoint, 'ro'))
    afterAll(() => remount(mountPoint, 'rw'))

    it('backup run: exit 1 naming the read-only directory, before pg_dump runs', async () => {
      const result = await runCli(['backup', 'run'], dbEnv())
      expect(named(result, new RegExp(`backup directory ${store} is not writable: EROFS`))).toEqual([1, 'names the cause'])
    })

    it('wal push: exit 1 naming EROFS', async () => {
      const result = await runCli(['wal', 'push', big.file], storageEnv())
      expect(named(result, /EROFS|read-only/)).toEqual([1, 'names the cause'])
    })

    it('prune with something to delete: exit 1 naming EROFS, nothing deleted', async () => {
      // Written before the remount would be cleaner; the old backup goes in through a rw window.
      remount(mountPoint, 'rw')
      const old = await writeOldBackup(model.store, new Date(Date.UTC(2020, 0, 2)))
      remount(mountPoint, 'ro')
      const result = await runCli(['prune', '--json'], storageEnv())
      expect([result.code, /EROFS|read-only/.test(result.stdout + result.stderr)]).toEqual([1, true])
      expect((await model.store.keys()).filter((key) => key.startsWith(old.id)).sort()).toEqual([old.id, `${old.id}.meta.json`])
      remount(mountPoint, 'rw')
      await model.store.remove(old.id)
      await model.store.remove(`${old.id}.meta.json`)
      remount(mountPoint, 'ro')
    })

    it('wal fetch from read-only storage: reads work, exit 0 with the whole segment', async () => {
      const dest = path.join(workDir, 'RECOVERYXLOG-ro')
      const result = await runCli(['wal', 'fetch', archived.name, dest], storageEnv())
      expect([result.code, result.stderr]).toEqual([0, expect.any(String)])
      expect(sha(await fs.readFile(dest))).toBe(archived.sha256)
    })

    it('restore_command contract: wal fetch into a read-only pg_wal exits above 125', async () => {
      remount(destMount, 'ro')
      try {
        const result = await runCli(['wal', 'fetch', archived.name, path.join(destMount, 'RECOVERYXLOG')], storageEnv())
        expect([result.code! > RESTORE_COMMAND_FATAL, result.code]).toEqual([true, expect.any(Number)])
      } finally {
        remount(destMount, 'rw')
      }
    })
  })

  describe('missing directory (the volume is not mounted)', () => {
    let away: string
    beforeAll(async () => {
      away = `${store}-unmounted`
      await fs.rename(store, away)
    })
    afterAll(async () => {
      await fs.rename(away, store)
      await checkArchive(model, 'after the missing-directory cases')
    })
    afterEach(async () => {
      // Nothing may have created the directory (and written into an empty disk instead of the volume).
      expect(existsSync(store)).toBe(false)
    })

    it.each([['backup run'], ['prune'], ['wal push']])('%s: exit 1 naming the missing directory', async (command) => {
      const argv = command === 'wal push' ? ['wal', 'push', big.file] : command.split(' ')
      const result = await runCli(argv, command === 'backup run' ? dbEnv() : storageEnv())
      expect(named(result, new RegExp(`${store}.*does not exist`))).toEqual([1, 'names the cause'])
    })

    it('restore_command contract: wal fetch with the storage directory missing exits above 125, loudly', async () => {
      const result = await runCli(['wal', 'fetch', archived.name, path.join(workDir, 'RECOVERYXLOG-missing')], storageEnv())
      expect([result.code! > RESTORE_COMMAND_FATAL, result.code, result.stderr.includes(store)]).toEqual([true, expect.any(Number), true])
    })
  })
})
