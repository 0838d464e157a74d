import * as fs from 'node:fs/promises'

import {prune} from '../../src/backup/prune'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'
import {writeLocalBackup} from '../helpers/fake-backups'

/** The real local backend, with every list() prefix and get() key recorded. */
function counting(backend: StorageBackend) {
  const lists: string[] = []
  const gets: string[] = []
  const wrapped: StorageBackend = {
    name: backend.name,
    location: backend.location,
    put: (key, body, options) => backend.put(key, body, options),
    get: (key, options) => {
      gets.push(key)
      return backend.get(key, options)
    },
    stat: (key) => backend.stat(key),
    list: (prefix) => {
      lists.push(prefix)
      return backend.list(prefix)
    },
    delete: (key) => backend.delete(key),
    health: () => backend.health(),
  }
  return {wrapped, lists, gets}
}

/**
 * Prune runs after every backup; on S3 each listing page and each sidecar read is a request. It
 * lists this prefix once and reads each sidecar once, however many passes (backups, orphans, WAL
 * floor) need them.
 */
describe('prune storage traffic (local backend)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('lists the prefix once and reads each sidecar once, and still applies every rule', async () => {
    const day = 86_400_000
    const backups = []
    for (const age of [1, 2, 3, 10, 20]) backups.push(await writeLocalBackup(dir, new Date(Date.now() - age * day)))
    const {wrapped, lists, gets} = counting(new LocalBackend(dir))

    const result = await prune(wrapped, {prefix: 'backup', rules: {retentionDays: 7, orphanGraceMs: day}})

    expect(result.deleted.map((entry) => entry.id).sort()).toEqual([backups[3].id, backups[4].id].sort())
    expect(lists.filter((prefix) => prefix === 'backup_')).toHaveLength(1)
    const sidecarReads = gets.filter((key) => key.endsWith('.meta.json'))
    expect(sidecarReads).toHaveLength(new Set(sidecarReads).size)
    expect(new Set(sidecarReads)).toEqual(new Set(backups.map((backup) => `${backup.id}.meta.json`)))
  })
})
