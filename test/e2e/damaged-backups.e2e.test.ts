import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {BIN, cliEnv, collect, runCli, tempDir} from '../helpers/cli'
import {setAge, writeLocalBackup} from '../helpers/fake-backups'
import {asServerUser} from '../helpers/postgres'

const DAY = 86_400_000
const daysAgo = (days: number) => new Date(Date.now() - days * DAY)

/**
 * Issue 11 holes 2, 3 and 10 on local storage: a backup whose sidecar exists but cannot be used
 * (invalid JSON, unreadable, a truncated dump) is listed as damaged, kept by prune, and makes
 * `latest` fail instead of meaning an older backup; a sidecar written by a newer dbb is a backup.
 */
describe('damaged and unreadable backups (local storage)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  const env = (extra: Record<string, string> = {}) => ({BACKUP_LOCAL_DIR: dir, ...extra})
  const files = async () => (await fs.readdir(dir)).sort()

  /** The newest backup's sidecar replaced by `content`, both objects dated two days back (past any grace). */
  async function damageSidecar(id: string, content: string, createdAt: Date): Promise<void> {
    await fs.writeFile(path.join(dir, `${id}.meta.json`), content)
    await setAge(path.join(dir, `${id}.meta.json`), createdAt)
  }

  it('prune keeps a backup whose sidecar is not JSON (the newest), deletes what is safe, names it and exits 1', async () => {
    const damaged = await writeLocalBackup(dir, daysAgo(2))
    const floor = await writeLocalBackup(dir, daysAgo(10))
    const expired = await writeLocalBackup(dir, daysAgo(20))
    await damageSidecar(damaged.id, '{"id": "trunc', daysAgo(2))

    const result = await runCli(['prune', '--json'], env({RETENTION_DAYS: '7', ORPHAN_GRACE: '1h'}))
    expect(result.code).toBe(1)
    const report = JSON.parse(result.stdout)
    expect(report.deleted.map((entry: {id: string}) => entry.id)).toEqual([expired.id])
    expect(report.damaged).toEqual([expect.objectContaining({id: damaged.id, status: 'damaged', cause: expect.stringContaining('is not JSON')})])
    expect(result.stderr).toContain(damaged.id)
    // The damaged backup's dump and sidecar stay; the newest complete one stays as the floor.
    expect(await files()).toEqual([damaged.id, `${damaged.id}.meta.json`, floor.id, `${floor.id}.meta.json`].sort())
  })

  it('prune without --json says so in words, and --dry-run says "would delete" with ages like 3d0h', async () => {
    const damaged = await writeLocalBackup(dir, daysAgo(1))
    await damageSidecar(damaged.id, 'not json', daysAgo(1))
    const orphan = path.join(dir, 'backup_20261101T000000Z.sql.gz')
    await fs.writeFile(orphan, 'no sidecar')
    await setAge(orphan, daysAgo(3))

    const dry = await runCli(['prune', '--dry-run'], env({ORPHAN_GRACE: '1h', LOG_FORMAT: 'plain'}))
    expect(dry.code).toBe(1)
    expect(dry.stdout).toContain('Would delete 1 object(s)')
    expect(dry.stdout).toMatch(/no backup owns it \(age 3d0h\)/)
    expect(dry.stderr).toContain('would delete orphan object')
    expect(dry.stderr).not.toMatch(/removed orphan|pruned backup/)
    expect(dry.stderr).toMatch(new RegExp(`Error: 1 backup\\(s\\) damaged or unreadable.*${damaged.id.replace(/\./g, '\\.')} \\(damaged: sidecar .* is not JSON`))
    expect(await files()).toContain(path.basename(orphan))
  })

  it('backup list shows a damaged backup with its status instead of hiding it, and exits 1', async () => {
    const good = await writeLocalBackup(dir, daysAgo(2))
    const invalid = await writeLocalBackup(dir, daysAgo(1))
    await damageSidecar(invalid.id, JSON.stringify({id: invalid.id, createdAt: 'yesterday'}), daysAgo(1))

    const table = await runCli(['backup', 'list'], env({LOG_FORMAT: 'plain'}))
    expect(table.code).toBe(1)
    const rows = table.stdout.split('\n')
    expect(rows[0]).toMatch(/^ID\s+STATUS\s+TYPE/)
    expect(rows.find((row) => row.startsWith(invalid.id))).toMatch(/\sdamaged\s/)
    expect(rows.find((row) => row.startsWith(good.id))).toMatch(/\sok\s/)
    expect(table.stderr).toContain(`${invalid.id} is damaged: sidecar ${invalid.id}.meta.json is not valid backup metadata (createdAt, sizeBytes, sha256)`)

    const json = await runCli(['backup', 'list', '--json'], env())
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout).map((entry: {id: string; status: string}) => [entry.id, entry.status])).toEqual([
      [invalid.id, 'damaged'],
      [good.id, 'ok'],
    ])
  })

  it('a truncated dump is damaged: listed so, and latest fails naming it instead of serving it or an older one', async () => {
    await writeLocalBackup(dir, daysAgo(2))
    const truncated = await writeLocalBackup(dir, daysAgo(1))
    const dump = path.join(dir, truncated.id)
    await fs.truncate(dump, truncated.sizeBytes - 5)

    const list = await runCli(['backup', 'list', '--json'], env())
    expect(list.code).toBe(1)
    expect(JSON.parse(list.stdout)[0]).toMatchObject({
      id: truncated.id,
      status: 'damaged',
      storedBytes: truncated.sizeBytes - 5,
      cause: `its dump is ${truncated.sizeBytes - 5} bytes in storage but was stored as ${truncated.sizeBytes} bytes (truncated or replaced)`,
    })

    const out = path.join(dir, 'out.gz')
    const download = await runCli(['backup', 'download', 'latest', '-o', out, '--json'], env())
    expect(download.code).toBe(1)
    expect(JSON.parse(download.stdout)).toMatchObject({error: 'BACKUP_DAMAGED', message: expect.stringContaining(`the newest backup (${truncated.id}) cannot be used`)})
    await expect(fs.stat(out)).rejects.toThrow()

    // Named explicitly, the same answer.
    const byId = await runCli(['backup', 'download', truncated.id, '-o', out, '--json'], env())
    expect(byId.code).toBe(1)
    expect(JSON.parse(byId.stdout).error).toBe('BACKUP_DAMAGED')
  })

  it('restore latest fails naming the newest backup when its sidecar is invalid (never restores an older one)', async () => {
    await writeLocalBackup(dir, daysAgo(2))
    const newest = await writeLocalBackup(dir, daysAgo(1))
    await damageSidecar(newest.id, '[]', daysAgo(1))
    const result = await runCli(['restore', 'latest', '--force', '--json'], env({DB_NAME: 'app', DB_USER: 'app', DB_PASSWORD: 'x', DB_HOST: '127.0.0.1', DB_PORT: '1'}))
    expect(result.code).toBe(1)
    expect(JSON.parse(result.stdout)).toMatchObject({error: 'BACKUP_DAMAGED', message: expect.stringContaining(newest.id)})
  })

  it('a sidecar from a newer dbb (unknown triggeredBy, type and compression, extra fields) is a backup: listed, kept by prune, refused by restore with a reason', async () => {
    const older = await writeLocalBackup(dir, daysAgo(3))
    const newer = await writeLocalBackup(dir, daysAgo(2))
    const sidecar = path.join(dir, `${newer.id}.meta.json`)
    const metadata = JSON.parse(await fs.readFile(sidecar, 'utf8'))
    await fs.writeFile(
      sidecar,
      JSON.stringify({...metadata, triggeredBy: 'webhook', type: 'incremental', compression: 'lz4', dbbVersion: '9.0.0', parent: older.id, encryption: {alg: 'age'}}),
    )
    await setAge(sidecar, daysAgo(2))

    const list = await runCli(['backup', 'list', '--json'], env())
    expect(list.code).toBe(0)
    expect(JSON.parse(list.stdout).map((entry: {id: string; status: string; triggeredBy: string}) => [entry.id, entry.status, entry.triggeredBy])).toEqual([
      [newer.id, 'ok', 'webhook'],
      [older.id, 'ok', 'cli'],
    ])

    const prune = await runCli(['prune', '--json'], env({RETENTION_DAYS: '1', ORPHAN_GRACE: '1h'}))
    expect(prune.code).toBe(0)
    // Its own type: the newest of that type is kept; the logical one is the newest logical, kept too.
    expect(JSON.parse(prune.stdout).deleted).toEqual([])
    expect(await files()).toEqual([older.id, `${older.id}.meta.json`, newer.id, `${newer.id}.meta.json`].sort())

    const restore = await runCli(['restore', newer.id, '--force', '--json'], env({DB_NAME: 'app', DB_USER: 'app', DB_PASSWORD: 'x', DB_HOST: '127.0.0.1', DB_PORT: '1'}))
    expect(restore.code).toBe(1)
    expect(JSON.parse(restore.stdout).message).toContain(`${newer.id} has type "incremental" and compression "lz4" (written by dbb 9.0.0)`)
  })

  it('backup list as a user who cannot read the sidecars names them and exits 1 (not "No backups.")', async () => {
    const backup = await writeLocalBackup(dir, daysAgo(1))
    await fs.chmod(dir, 0o755)
    await fs.chmod(path.join(dir, `${backup.id}.meta.json`), 0o000)
    const home = await tempDir('dbb-home-')
    await fs.chmod(home, 0o777)
    try {
      // root reads anything: run as another user then (the test clusters' `postgres`).
      const [command, args] = asServerUser(process.execPath, [BIN, 'backup', 'list'])
      const child = spawn(command, args, {
        env: cliEnv({BACKUP_LOCAL_DIR: dir, LOG_FORMAT: 'plain', HOME: home}),
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      const result = await collect(child)
      expect(result.code).toBe(1)
      expect(result.stdout).not.toContain('No backups.')
      expect(result.stdout.split('\n').find((row) => row.startsWith(backup.id))).toMatch(/\sunreadable\s/)
      expect(result.stderr).toContain(`${backup.id} is unreadable: reading ${backup.id}.meta.json failed`)
    } finally {
      await fs.rm(home, {recursive: true, force: true})
    }
  })

  it('dbb check fails naming a damaged newest logical backup (an older complete one does not make it pass)', async () => {
    await writeLocalBackup(dir, new Date(Date.now() - 3_600_000))
    const newest = await writeLocalBackup(dir, new Date(Date.now() - 60_000))
    await damageSidecar(newest.id, '{', new Date())
    const result = await runCli(['check', '--json'], env({CHECK_WAL: 'false', CHECK_BASE_BACKUP: 'false', BACKUP_INTERVAL: '1d'}))
    expect(result.code).toBe(1)
    const logical = JSON.parse(result.stdout).checks.find((check: {name: string}) => check.name === 'logical-backup')
    expect(logical).toMatchObject({status: 'fail', message: expect.stringContaining(`newest logical backup ${newest.id} is damaged`)})
  })
})
