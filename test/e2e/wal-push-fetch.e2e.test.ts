import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gunzipSync} from 'node:zlib'

import {runCli, tempDir} from '../helpers/cli'

/** dbb wal push / fetch as PostgreSQL calls them, on real files and a real local storage directory. */
describe('dbb wal push / wal fetch', () => {
  let storeDir: string
  let workDir: string
  const segment = '000000010000000000000007'

  beforeAll(async () => {
    storeDir = await tempDir('dbb-wal-store-')
    workDir = await tempDir('dbb-wal-work-')
    await fs.mkdir(path.join(workDir, 'pg_wal'))
  })

  afterAll(async () => {
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(workDir, {recursive: true, force: true})
  })

  const env = () => ({BACKUP_LOCAL_DIR: storeDir})
  // PostgreSQL passes %p relative to the data directory, which is the working directory.
  const push = (relative: string) => runCli(['wal', 'push', relative, '--json'], env(), {cwd: workDir})

  it('stores a segment compressed under wal/, and pushing the same content again succeeds without rewriting it', async () => {
    // A segment-sized file: mostly zeros like a real switched segment, with some random bytes.
    const content = Buffer.concat([randomBytes(64 * 1024), Buffer.alloc(16 * 1024 * 1024 - 64 * 1024)])
    await fs.writeFile(path.join(workDir, 'pg_wal', segment), content)

    const first = await push(`pg_wal/${segment}`)
    expect(first.code).toBe(0)
    expect(JSON.parse(first.stdout)).toMatchObject({name: segment, key: `wal/${segment}.gz`, outcome: 'stored'})
    const storedPath = path.join(storeDir, 'wal', `${segment}.gz`)
    const stored = await fs.readFile(storedPath)
    expect(stored.length).toBeLessThan(content.length / 10)
    expect(gunzipSync(stored).equals(content)).toBe(true)
    const before = await fs.stat(storedPath)

    const again = await push(`pg_wal/${segment}`)
    expect(again.code).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({name: segment, outcome: 'already-archived'})
    expect((await fs.stat(storedPath)).mtimeMs).toBe(before.mtimeMs)
    expect(await fs.readdir(path.join(storeDir, 'wal'))).toEqual([`${segment}.gz`])
  })

  it('refuses different content under an archived name loudly (split-brain) and keeps the archived copy', async () => {
    const storedPath = path.join(storeDir, 'wal', `${segment}.gz`)
    const original = await fs.readFile(storedPath)
    await fs.writeFile(path.join(workDir, 'pg_wal', segment), randomBytes(4096))
    const conflict = await runCli(['wal', 'push', `pg_wal/${segment}`], env(), {cwd: workDir})
    expect(conflict.code).toBe(1)
    expect(conflict.stderr).toContain(`${segment} is already archived`)
    expect(conflict.stderr).toMatch(/possible split-brain/)
    expect(conflict.stderr).not.toMatch(/\n\s+at /)
    expect(await fs.readFile(storedPath)).toEqual(original)
  })

  it('fetches a segment to the requested path atomically, and exits 1 quietly for a missing one', async () => {
    const dest = path.join(workDir, 'pg_wal', 'RECOVERYXLOG')
    const fetched = await runCli(['wal', 'fetch', segment, 'pg_wal/RECOVERYXLOG'], env(), {cwd: workDir})
    expect(fetched.code).toBe(0)
    // Buffer.equals: jest's deep equality walks 16 MiB byte by byte.
    expect((await fs.readFile(dest)).equals(gunzipSync(await fs.readFile(path.join(storeDir, 'wal', `${segment}.gz`))))).toBe(true)
    expect((await fs.readdir(path.join(workDir, 'pg_wal'))).filter((name) => name.includes('partial'))).toEqual([])

    const missing = await runCli(['wal', 'fetch', '000000010000000000000099', 'pg_wal/RECOVERYXLOG2'], env(), {cwd: workDir})
    expect(missing.code).toBe(1)
    expect(missing.stdout).toBe('')
    expect(missing.stderr.trim().split('\n').filter(Boolean).length).toBeLessThanOrEqual(1)
    await expect(fs.stat(path.join(workDir, 'pg_wal', 'RECOVERYXLOG2'))).rejects.toThrow()

    const history = await runCli(['wal', 'fetch', '00000002.history', 'pg_wal/RECOVERYHISTORY'], env(), {cwd: workDir})
    expect(history.code).toBe(1)
  })

  it('rejects a file that is not WAL (exit 2) and a missing file (exit 1), storing nothing', async () => {
    await fs.writeFile(path.join(workDir, 'notes.txt'), 'hello')
    const notWal = await runCli(['wal', 'push', 'notes.txt'], env(), {cwd: workDir})
    expect(notWal.code).toBe(2)
    expect(notWal.stderr).toMatch(/not a WAL file name/)
    const gone = await runCli(['wal', 'push', 'pg_wal/000000010000000000000042'], env(), {cwd: workDir})
    expect(gone.code).toBe(1)
    expect(gone.stderr).toMatch(/000000010000000000000042/)
    expect(await fs.readdir(path.join(storeDir, 'wal'))).toEqual([`${segment}.gz`])
  })
})
