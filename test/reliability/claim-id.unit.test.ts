import {Readable} from 'node:stream'

import {claimBackupId, heartbeatInterval} from '../../src/backup/claim-id'
import type {ObjectInfo, StorageBackend} from '../../src/storage/contract'

/**
 * A store with S3's semantics where it matters here: writes replace silently (no conditional
 * writes), listing is read-after-write consistent, and every call yields to the event loop, so
 * concurrent claims interleave at each step.
 */
function memoryStore(): StorageBackend & {keys: () => string[]} {
  const objects = new Map<string, Date>()
  const tick = () => new Promise((resolve) => setImmediate(resolve))
  return {
    name: 'memory',
    location: 'memory://',
    keys: () => [...objects.keys()].sort(),
    async put(key, body) {
      for await (const _chunk of body) await tick()
      await tick()
      objects.set(key, new Date())
      return {sizeBytes: 0}
    },
    async get() {
      return Readable.from([])
    },
    async stat(key) {
      await tick()
      const at = objects.get(key)
      return at ? {key, sizeBytes: 0, lastModified: at} : undefined
    },
    async *list(prefix): AsyncIterable<ObjectInfo> {
      await tick()
      for (const [key, at] of [...objects]) if (key.startsWith(prefix)) yield {key, sizeBytes: 0, lastModified: at}
    },
    async delete(key) {
      await tick()
      objects.delete(key)
    },
    async health() {},
  }
}

describe('claimBackupId', () => {
  const startedAt = new Date('2026-11-21T03:00:00Z')

  it('gives concurrent runs started in the same second distinct ids, even without conditional writes', async () => {
    const store = memoryStore()
    const claims = await Promise.all(Array.from({length: 6}, () => claimBackupId(store, 'backup', startedAt, 'sql')))
    const ids = claims.map((claim) => claim.id)
    expect(new Set(ids).size).toBe(6)
    for (const id of ids) expect(id).toMatch(/^backup_20261121T030000Z(-\d+)?\.sql\.gz$/)
    // Each holds exactly its own claim until released; then nothing is left.
    expect(store.keys()).toHaveLength(6)
    await Promise.all(claims.map((claim) => claim.release()))
    expect(store.keys()).toEqual([])
  })

  it('skips ids that have a dump, a sidecar or another run’s claim', async () => {
    const store = memoryStore()
    await store.put('backup_20261121T030000Z.sql.gz', Readable.from([]))
    await store.put('backup_20261121T030000Z-2.sql.gz.meta.json', Readable.from([]))
    await store.put('backup_20261121T030000Z-3.sql.gz.00ff00ff00ff00ff.partial', Readable.from([]))
    const claim = await claimBackupId(store, 'backup', startedAt, 'sql')
    expect(claim.id).toBe('backup_20261121T030000Z-4.sql.gz')
    expect(store.keys()).toContainEqual(expect.stringMatching(/^backup_20261121T030000Z-4\.sql\.gz\.[0-9a-f]{16}\.partial$/))
  })

  it('refreshes the claim while held (the heartbeat prune honours), and release leaves none behind, even with a beat in flight', async () => {
    const store = memoryStore()
    const claim = await claimBackupId(store, 'backup', startedAt, 'sql', {heartbeatMs: 20})
    const written = async () => (await store.stat(store.keys()[0]))!.lastModified.getTime()
    const first = await written()
    await new Promise((resolve) => setTimeout(resolve, 120))
    expect(await written()).toBeGreaterThan(first)
    await claim.release()
    expect(store.keys()).toEqual([])
    await new Promise((resolve) => setTimeout(resolve, 80))
    expect(store.keys()).toEqual([])
  })

  it('a heartbeat interval is a quarter of ORPHAN_GRACE, at most a minute', () => {
    expect(heartbeatInterval(24 * 3600 * 1000)).toBe(60_000)
    expect(heartbeatInterval(2000)).toBe(500)
  })
})
