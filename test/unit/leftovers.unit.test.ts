import {Readable} from 'node:stream'

import {LEGACY_HEARTBEAT_MS, MAX_HEARTBEAT_MS, staleAfterMs} from '../../src/backup/claim-id'
import {removeLeftovers} from '../../src/backup/leftovers'
import type {ObjectInfo, StagedLeftover, StorageBackend, SweepOptions} from '../../src/storage/contract'

/**
 * The start cleanup's rules (src/backup/leftovers.ts) on a store whose clock the test sets: which
 * ids count as dead, what of them goes, and that ages are the store's, not this host's.
 */
function clockedStore(uploads: StagedLeftover[] = []) {
  let now = Date.parse('2026-12-01T03:00:00Z')
  const objects = new Map<string, {at: number; body: Buffer}>()
  const sweeps: {olderThan: Date; options?: SweepOptions}[] = []
  const store: StorageBackend = {
    name: 'clocked',
    location: 'clocked://',
    async put(key, body) {
      const chunks: Buffer[] = []
      for await (const chunk of body) chunks.push(Buffer.from(chunk))
      objects.set(key, {at: now, body: Buffer.concat(chunks)})
      return {sizeBytes: 0}
    },
    async get(key) {
      const object = objects.get(key)
      if (!object) throw Object.assign(new Error(`no such object: ${key}`), {code: 'NOT_FOUND'})
      return Readable.from([object.body])
    },
    async stat(key) {
      const object = objects.get(key)
      return object ? {key, sizeBytes: object.body.length, lastModified: new Date(object.at)} : undefined
    },
    async *list(prefix): AsyncIterable<ObjectInfo> {
      for (const [key, object] of [...objects]) if (key.startsWith(prefix)) yield {key, sizeBytes: object.body.length, lastModified: new Date(object.at)}
    },
    async delete(key) {
      objects.delete(key)
    },
    async health() {},
    async sweep(olderThan, options) {
      sweeps.push({olderThan, options})
      return uploads.filter((upload) => upload.startedAt < olderThan && (!options?.only || options.only(upload.key)))
    },
  }
  return {
    store,
    sweeps,
    keys: () => [...objects.keys()].sort(),
    advance: (ms: number) => (now += ms),
    write: (key: string, body = '') => store.put(key, Readable.from([Buffer.from(body)])),
  }
}

const DEAD = 'backup_20261201T020000Z.sql.gz'
const LIVE = 'backup_20261201T021000Z.sql.gz'
const claim = (id: string, token = '0123456789abcdef') => `${id}.${token}.partial`

describe('removeLeftovers (the start cleanup)', () => {
  it('removes a dead writer’s objects once its recorded heartbeat is 3 beats stale, never a fresher one’s', async () => {
    const s = clockedStore()
    await s.write(claim(DEAD), JSON.stringify({heartbeatMs: 500}))
    await s.write(`${DEAD}.00aa00aa00aa.partial`, 'half a dump')
    await s.write(claim(LIVE), JSON.stringify({heartbeatMs: 10_000}))
    s.advance(staleAfterMs(500) + 1)
    // The live writer's last beat is as old, but its interval is 10 s: it is within 3 beats.
    const removed = await removeLeftovers(s.store, {prefix: 'backup'})
    expect(removed.map((entry) => entry.key).sort()).toEqual([claim(DEAD), `${DEAD}.00aa00aa00aa.partial`].sort())
    // The claim goes last: while it stands, no other run can take the id.
    expect(removed.at(-1)!.key).toBe(claim(DEAD))
    expect(s.keys()).toEqual([claim(LIVE)])
  })

  it('a claim without a recorded interval (older dbb) counts as beating every minute; an id without a claim gets the longest interval in use', async () => {
    const s = clockedStore()
    await s.write(claim(DEAD))
    await s.write(`${LIVE}.00aa00aa00aa.partial`)
    s.advance(staleAfterMs(MAX_HEARTBEAT_MS) + 1)
    expect((await removeLeftovers(s.store, {prefix: 'backup'})).map((entry) => entry.key)).toEqual([`${LIVE}.00aa00aa00aa.partial`])
    s.advance(staleAfterMs(LEGACY_HEARTBEAT_MS) - staleAfterMs(MAX_HEARTBEAT_MS))
    expect((await removeLeftovers(s.store, {prefix: 'backup'})).map((entry) => entry.key)).toEqual([claim(DEAD)])
  })

  it('a complete backup loses only its stray .partial objects; other prefixes and non-backup keys are not looked at', async () => {
    const s = clockedStore()
    await s.write(DEAD, 'dump')
    await s.write(`${DEAD}.meta.json`, '{}')
    await s.write(claim(DEAD), JSON.stringify({heartbeatMs: 500}))
    await s.write(claim('other_20261201T020000Z.sql.gz'), JSON.stringify({heartbeatMs: 500}))
    await s.write('wal/000000010000000000000001.0123456789abcdef.partial')
    s.advance(60_000)
    expect((await removeLeftovers(s.store, {prefix: 'backup'})).map((entry) => entry.key)).toEqual([claim(DEAD)])
    expect(s.keys()).toEqual([DEAD, `${DEAD}.meta.json`, claim('other_20261201T020000Z.sql.gz'), 'wal/000000010000000000000001.0123456789abcdef.partial'].sort())
  })

  it('the clock probe leaves nothing behind, and one a kill left (a year-1 claim beating every ms) is removed by the next start', async () => {
    const s = clockedStore()
    await removeLeftovers(s.store, {prefix: 'backup'})
    expect(s.keys()).toEqual([])
    const stray = 'backup_00010101T000000Z.sql.gz.0123456789abcdef.partial'
    await s.write(stray, JSON.stringify({heartbeatMs: 1}))
    s.advance(staleAfterMs(1) + 1)
    expect((await removeLeftovers(s.store, {prefix: 'backup'})).map((entry) => entry.key)).toEqual([stray])
    expect(s.keys()).toEqual([])
  })

  it('ages are measured on the store’s clock: a host whose clock runs an hour ahead removes nothing fresh', async () => {
    const s = clockedStore()
    await s.write(claim(LIVE), JSON.stringify({heartbeatMs: 500}))
    const realNow = Date.now
    Date.now = () => realNow() + 3600_000
    try {
      expect(await removeLeftovers(s.store, {prefix: 'backup'})).toEqual([])
    } finally {
      Date.now = realNow
    }

    expect(s.keys()).toEqual([claim(LIVE)])
  })

  it('staged uploads are swept only for dead ids (`only`), before their claims go; none when no id is dead', async () => {
    const s = clockedStore([
      {key: DEAD, startedAt: new Date('2026-12-01T02:00:01Z'), sizeBytes: 0, kind: 'incomplete multipart upload'},
      {key: LIVE, startedAt: new Date('2026-12-01T02:10:01Z'), sizeBytes: 0, kind: 'incomplete multipart upload'},
    ])
    expect(await removeLeftovers(s.store, {prefix: 'backup'})).toEqual([])
    expect(s.sweeps).toEqual([])

    await s.write(claim(DEAD), JSON.stringify({heartbeatMs: 500}))
    s.advance(staleAfterMs(500) + 1)
    await s.write(claim(LIVE), JSON.stringify({heartbeatMs: 500}))
    const removed = await removeLeftovers(s.store, {prefix: 'backup'})
    expect(removed.map((entry) => [entry.kind, entry.key])).toEqual([
      ['staged', DEAD],
      ['object', claim(DEAD)],
    ])
    expect(s.sweeps).toHaveLength(1)
    expect(s.sweeps[0].options?.only?.(LIVE)).toBe(false)
    expect(s.sweeps[0].options?.only?.(DEAD)).toBe(true)
  })
})
