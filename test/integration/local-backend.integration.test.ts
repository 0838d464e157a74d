import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Readable} from 'node:stream'

import {localProvider} from '../../src/plugins/local/src'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {tempDir} from '../helpers/cli'
import {storageConformanceSuite} from '../helpers/storage-conformance'

const directories: string[] = []
async function freshDirectory(): Promise<string> {
  const directory = await tempDir('dbb-local-')
  directories.push(directory)
  return directory
}

afterAll(async () => {
  await Promise.all(directories.map((directory) => fs.rm(directory, {recursive: true, force: true})))
})

storageConformanceSuite({name: 'local', provider: localProvider, create: async () => new LocalBackend(await freshDirectory()), atomicNoOverwrite: true})

describe('local backend health', () => {
  it('fails with a message naming the missing directory and what to do', async () => {
    const missing = path.join(await freshDirectory(), 'not-there')
    await expect(new LocalBackend(missing).health()).rejects.toThrow(
      `backup directory ${missing} does not exist (create it, or set BACKUP_LOCAL_DIR to an existing directory)`,
    )
  })

  it('put never creates a missing root (an unmounted volume): it fails naming the directory, and nothing is written', async () => {
    const missing = path.join(await freshDirectory(), 'not-mounted')
    await expect(new LocalBackend(missing).put('wal/000000010000000000000001.gz', Readable.from([Buffer.from('x')]))).rejects.toThrow(
      `backup directory ${missing} does not exist (check BACKUP_LOCAL_DIR)`,
    )
    await expect(fs.stat(missing)).rejects.toMatchObject({code: 'ENOENT'})
  })

  it('fails when the location is a file, not a directory', async () => {
    const file = path.join(await freshDirectory(), 'file')
    await fs.writeFile(file, 'x')
    await expect(new LocalBackend(file).health()).rejects.toThrow(/is not a directory/)
  })
})

describe('local backend: modes and missing locations', () => {
  it('stores files 0640 and creates directories 2770 whatever the umask (group-readable by the server, never world-readable)', async () => {
    const root = await freshDirectory()
    const previous = process.umask(0o077)
    try {
      await new LocalBackend(root).put('wal/deep/000000010000000000000001.gz', Readable.from([Buffer.from('x')]))
    } finally {
      process.umask(previous)
    }

    expect((await fs.stat(path.join(root, 'wal', 'deep', '000000010000000000000001.gz'))).mode & 0o7777).toBe(0o640)
    expect((await fs.stat(path.join(root, 'wal', 'deep'))).mode & 0o7777).toBe(0o2770)
    expect((await fs.stat(path.join(root, 'wal'))).mode & 0o7777).toBe(0o2770)
  })

  it('a missing root is never NOT_FOUND: get and stat reject naming BACKUP_LOCAL_DIR (an unmounted volume must not look empty)', async () => {
    const missing = path.join(await freshDirectory(), 'unmounted')
    const storage = new LocalBackend(missing)
    await expect(storage.get('wal/000000010000000000000001.gz')).rejects.toMatchObject({code: 'LOCATION_MISSING', message: expect.stringMatching(/does not exist \(check BACKUP_LOCAL_DIR\)/)})
    await expect(storage.stat('wal/000000010000000000000001.gz')).rejects.toMatchObject({code: 'LOCATION_MISSING'})
  })
})
