import {Readable} from 'node:stream'

import {LEGACY_HEARTBEAT_MS, claimBackupId, claimHeartbeatMs, claimedIdOf, heartbeatInterval, staleAfterMs} from '../../src/backup/claim-id'
import type {ObjectInfo, StorageBackend} from '../../src/storage/contract'

/**
 * A store with S3's semantics where it matters here: writes replace silently (no conditional
 * writes), listing is read-after-write consistent, and every call yields to the event loop, so
 * concurrent claims interleave at each step.
 */
function memoryStore(): StorageBackend & {keys: () => string[]} {
  const objects = new Map<string, Date>()
  const bodies = new Map<string, Buffer>()
  const tick = () => new Promise((resolve) => setImmediate(resolve))
  return {
    name: 'memory',
    location: 'memory://',
    keys: () => [...objects.keys()].sort(),
    async put(key, body) {
      const chunks: Buffer[] = []
      for await (const chunk of body) {
        chunks.push(Buffer.from(chunk))
        await tick()
      }

      await tick()
      objects.set(key, new Date())
      bodies.set(key, Buffer.concat(chunks))
      return {sizeBytes: 0}
    },
    async get(key) {
      const body = bodies.get(key)
      if (!objects.has(key) || !body) throw Object.assign(new Error(`no such object: ${key}`), {code: 'NOT_FOUND'})
      return Readable.from([body])
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

  it('a heartbeat interval is a quarter of ORPHAN_GRACE, at most 10 s; a writer is stale after three missed beats', () => {
    expect(heartbeatInterval(24 * 3600 * 1000)).toBe(10_000)
    expect(heartbeatInterval(2000)).toBe(500)
    expect(staleAfterMs(10_000)).toBe(32_000)
    expect(staleAfterMs(500)).toBe(3_500)
  })

  it('the claim records its heartbeat interval; a claim without one (older dbb) counts as refreshed every minute', async () => {
    const store = memoryStore()
    const claim = await claimBackupId(store, 'backup', startedAt, 'sql', {heartbeatMs: 750})
    const [key] = store.keys()
    expect(claimedIdOf(key)).toBe(claim.id)
    expect(await claimHeartbeatMs(store, key)).toBe(750)
    await claim.release()
    expect(await claimHeartbeatMs(store, key)).toBeUndefined()

    await store.put('backup_20261121T030000Z.sql.gz.00ff00ff00ff00ff.partial', Readable.from([]))
    expect(await claimHeartbeatMs(store, 'backup_20261121T030000Z.sql.gz.00ff00ff00ff00ff.partial')).toBe(LEGACY_HEARTBEAT_MS)
    // A local store's temp write of a claim, and a dump's temp file, are not claims.
    expect(claimedIdOf('backup_20261121T030000Z.sql.gz.00ff00ff00ff00ff.partial.0123456789ab.partial')).toBeUndefined()
    expect(claimedIdOf('backup_20261121T030000Z.sql.gz.0123456789ab.partial')).toBeUndefined()
  })
})
