import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, startCli, tempDir} from '../helpers/cli'
import {writeLocalBackup} from '../helpers/fake-backups'

describe('dbb backup download (local storage)', () => {
  let dir: string
  let out: string
  let backup: {id: string; sha256: string; sizeBytes: number}
  beforeEach(async () => {
    dir = await tempDir()
    out = await tempDir()
    backup = await writeLocalBackup(dir, new Date(Date.now() - 60_000), {sql: 'SELECT 42;\n'.repeat(1000)})
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
    await fs.rm(out, {recursive: true, force: true})
  })

  it('writes the file named after the id by default, with the verified bytes', async () => {
    const result = await runCli(['backup', 'download', backup.id, '--json'], {BACKUP_LOCAL_DIR: dir}, {cwd: out})
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({id: backup.id, file: backup.id, sizeBytes: backup.sizeBytes, sha256: backup.sha256})
    const bytes = await fs.readFile(path.join(out, backup.id))
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(backup.sha256)
  })

  it('streams the exact bytes to stdout with -o -', async () => {
    const child = startCli(['backup', 'download', 'latest', '-o', '-'], {BACKUP_LOCAL_DIR: dir})
    const chunks: Buffer[] = []
    child.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk))
    const code = await new Promise((resolve) => child.on('close', resolve))
    expect(code).toBe(0)
    expect(createHash('sha256').update(Buffer.concat(chunks)).digest('hex')).toBe(backup.sha256)
  })

  it('refuses a tampered dump: exit 1, no file left behind', async () => {
    const file = path.join(dir, backup.id)
    const bytes = await fs.readFile(file)
    bytes[bytes.length - 10] ^= 0xff
    await fs.writeFile(file, bytes)
    const target = path.join(out, 'copy.sql.gz')
    const result = await runCli(['backup', 'download', backup.id, '-o', target], {BACKUP_LOCAL_DIR: dir})
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/integrity check failed for .*the stored dump is damaged or was altered/)
    expect(await fs.readdir(out)).toEqual([])
  })

  it.each([
    ['../../etc/passwd', 2, /is not a backup id/],
    ['backup_20261121T030000Z.sql.gz/../x', 2, /is not a backup id/],
    ['%2e%2e%2fetc', 2, /is not a backup id/],
    ['backup_20200101T000000Z.sql.gz', 1, /backup backup_20200101T000000Z\.sql\.gz not found/],
  ])('%s → exit %d, nothing written', async (id, code, message) => {
    const result = await runCli(['backup', 'download', id, '-o', path.join(out, 'x')], {BACKUP_LOCAL_DIR: dir})
    expect(result.code).toBe(code)
    expect(result.stderr).toMatch(message)
    expect(await fs.readdir(out)).toEqual([])
  })

  it('latest with no backups is a clear error', async () => {
    const empty = await tempDir()
    const result = await runCli(['backup', 'download', 'latest'], {BACKUP_LOCAL_DIR: empty}, {cwd: out})
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`Error: no backups found in ${empty}`)
  })

  it('does not overwrite an existing file without --force', async () => {
    const target = path.join(out, 'existing')
    await fs.writeFile(target, 'keep me')
    const result = await runCli(['backup', 'download', 'latest', '-o', target], {BACKUP_LOCAL_DIR: dir})
    expect(result.code).toBe(2)
    expect(await fs.readFile(target, 'utf8')).toBe('keep me')
    const forced = await runCli(['backup', 'download', 'latest', '-o', target, '--force'], {BACKUP_LOCAL_DIR: dir})
    expect(forced.code).toBe(0)
    expect((await fs.readFile(target)).length).toBe(backup.sizeBytes)
  })
})
