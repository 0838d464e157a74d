import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'

/**
 * archive_command and restore_command take a fast path that skips oclif (src/wal/fast-cli.ts). It
 * must resolve settings exactly as the full CLI does: X_FILE secrets read, a bad X_FILE refused,
 * and no secret value ever printed.
 */
describe('wal push / wal fetch fast path resolves settings like the full CLI', () => {
  let work: string
  let segment: string

  beforeAll(async () => {
    work = await tempDir()
    await fs.mkdir(path.join(work, 'store'))
    segment = path.join(work, '000000010000000000000001')
    await fs.writeFile(segment, Buffer.alloc(64 * 1024, 7))
  })

  afterAll(async () => {
    await fs.rm(work, {recursive: true, force: true})
  })

  it('refuses a secret given both as X and X_FILE (exit 2 for push, 200 for fetch), naming the variable and never its value', async () => {
    const secretFile = path.join(work, 'token')
    await fs.writeFile(secretFile, 'file-secret-value-123\n')
    const env = {BACKUP_LOCAL_DIR: path.join(work, 'store'), API_TOKEN: 'inline-secret-value-456', API_TOKEN_FILE: secretFile}
    const push = await runCli(['wal', 'push', segment], env)
    expect(push.code).toBe(2)
    expect(push.stderr).toContain('API_TOKEN_FILE')
    const fetch = await runCli(['wal', 'fetch', '000000010000000000000001', path.join(work, 'out')], env)
    expect(fetch.code).toBe(200)
    for (const output of [push.stdout, push.stderr, fetch.stdout, fetch.stderr]) {
      expect(output).not.toContain('inline-secret-value-456')
      expect(output).not.toContain('file-secret-value-123')
    }
  })

  it('archives and fetches with settings otherwise valid', async () => {
    const env = {BACKUP_LOCAL_DIR: path.join(work, 'store')}
    expect((await runCli(['wal', 'push', segment], env)).code).toBe(0)
    const out = path.join(work, 'fetched')
    expect((await runCli(['wal', 'fetch', '000000010000000000000001', out], env)).code).toBe(0)
    expect(await fs.readFile(out)).toEqual(await fs.readFile(segment))
  })
})
