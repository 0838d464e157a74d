import {createHash, randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import type {ListOptions, StorageBackend} from '../../src/storage/contract'

/**
 * ONE conformance suite for the storage contract (src/storage/contract.ts); every backend runs it
 * in one line: `storageConformanceSuite({name: 'local', create: async () => new LocalBackend(dir)})`.
 * The backend it gets must be empty and used by nothing else while the suite runs.
 */
export interface ConformanceTarget {
  name: string
  create(): Promise<StorageBackend>
  /** Bytes a failing or aborted source sends first: enough that e.g. a multipart upload is under way. */
  bytesBeforeFailure?: number
  /**
   * Whether `overwrite: false` is atomic against a concurrent writer. Where it is best effort (an
   * existence check before the write), only the sequential case is tested — that is what it promises.
   */
  atomicNoOverwrite?: boolean
}

const MIB = 1024 * 1024

export function storageConformanceSuite(target: ConformanceTarget): void {
  const failAfter = target.bytesBeforeFailure ?? MIB

  describe(`storage contract: ${target.name}`, () => {
    let storage: StorageBackend

    beforeAll(async () => {
      storage = await target.create()
    })

    afterAll(async () => {
      await storage?.close?.()
    })

    it('health() resolves for a usable location', async () => {
      await expect(storage.health()).resolves.toBeUndefined()
    })

    it('stores a stream and returns exactly its bytes, including an empty object', async () => {
      const data = randomBytes(MIB + 123)
      await expect(storage.put('rt_object.bin', chunked(data, 64 * 1024))).resolves.toEqual({sizeBytes: data.length})
      expect(await readAll(await storage.get('rt_object.bin'))).toEqual(data)

      await expect(storage.put('rt_empty.bin', Readable.from([]))).resolves.toEqual({sizeBytes: 0})
      expect((await readAll(await storage.get('rt_empty.bin'))).length).toBe(0)
    })

    it('reads a byte range, inclusive at both ends, and a range to the end', async () => {
      const data = randomBytes(10_000)
      await storage.put('range_object.bin', Readable.from([data]))
      expect(await readAll(await storage.get('range_object.bin', {start: 100, end: 199}))).toEqual(data.subarray(100, 200))
      expect(await readAll(await storage.get('range_object.bin', {start: 9990}))).toEqual(data.subarray(9990))
    })

    it('stat() gives size and modification time, and undefined for a missing key', async () => {
      const before = Date.now()
      await storage.put('stat_object.bin', Readable.from([Buffer.alloc(4321, 7)]))
      const info = await storage.stat('stat_object.bin')
      expect(info).toMatchObject({key: 'stat_object.bin', sizeBytes: 4321})
      // Stores keep whole seconds; allow for that and a little clock skew.
      expect(info!.lastModified.getTime()).toBeGreaterThanOrEqual(before - 5000)
      expect(info!.lastModified.getTime()).toBeLessThanOrEqual(Date.now() + 5000)
      await expect(storage.stat('stat_missing.bin')).resolves.toBeUndefined()
    })

    it('lists by prefix, including nested wal/ keys, with sizes', async () => {
      const objects: Record<string, number> = {lst_a: 1, lst_b: 22, 'lst-other': 3, 'wal/lst_1': 44, 'wal/sub/lst_2': 5}
      for (const [key, size] of Object.entries(objects)) await storage.put(key, Readable.from([Buffer.alloc(size, 1)]))

      expect(await listed(storage, 'lst_')).toEqual({lst_a: 1, lst_b: 22})
      expect(await listed(storage, 'wal/')).toEqual({'wal/lst_1': 44, 'wal/sub/lst_2': 5})
      expect(await listed(storage, 'wal/sub/')).toEqual({'wal/sub/lst_2': 5})
      expect(await listed(storage, 'lst_nothing')).toEqual({})
      expect(await listed(storage, '')).toMatchObject(objects)
    })

    it('lists only keys after startAfter (byte order), from inside or before the prefix', async () => {
      for (const key of ['saf/000000010000000000000001', 'saf/000000010000000000000002', 'saf/000000020000000000000001', 'saf/00000002.history']) {
        await storage.put(key, Readable.from([Buffer.from('x')]))
      }

      // '.' sorts before '0': a timeline's history file comes before its segments.
      expect(Object.keys(await listed(storage, 'saf/', {startAfter: 'saf/000000010000000000000001'})).sort()).toEqual([
        'saf/000000010000000000000002',
        'saf/00000002.history',
        'saf/000000020000000000000001',
      ])
      expect(Object.keys(await listed(storage, 'saf/', {startAfter: 'saf/00000002'})).sort()).toEqual(['saf/00000002.history', 'saf/000000020000000000000001'])
      expect(Object.keys(await listed(storage, 'saf/', {startAfter: 'a'}))).toHaveLength(4)
      // endBefore bounds the range from above; with startAfter, one timeline's segments before a position.
      expect(Object.keys(await listed(storage, 'saf/', {endBefore: 'saf/00000002'})).sort()).toEqual(['saf/000000010000000000000001', 'saf/000000010000000000000002'])
      expect(Object.keys(await listed(storage, 'saf/', {startAfter: 'saf/00000001', endBefore: 'saf/000000010000000000000002'}))).toEqual(['saf/000000010000000000000001'])
      expect(Object.keys(await listed(storage, 'saf/', {startAfter: 'saf/00000002', endBefore: 'saf/00000002'}))).toEqual([])
    })

    it('deletes a key, and deleting a missing key succeeds', async () => {
      await storage.put('del_object.bin', Readable.from([Buffer.from('bye')]))
      await storage.delete('del_object.bin')
      await expect(storage.stat('del_object.bin')).resolves.toBeUndefined()
      await expect(storage.get('del_object.bin')).rejects.toMatchObject({code: 'NOT_FOUND'})
      await expect(storage.delete('del_never_existed.bin')).resolves.toBeUndefined()
    })

    it('get() of a missing key rejects with NOT_FOUND', async () => {
      await expect(storage.get('missing_object.bin')).rejects.toMatchObject({code: 'NOT_FOUND'})
    })

    it(`overwrite:false onto an existing key fails with ALREADY_EXISTS and keeps the original${
      target.atomicNoOverwrite === false ? ' (best effort: sequential case)' : ''
    }`, async () => {
      await storage.put('ow_object.bin', Readable.from([Buffer.from('first')]), {overwrite: false})
      await expect(storage.put('ow_object.bin', Readable.from([Buffer.from('second')]), {overwrite: false})).rejects.toMatchObject({
        code: 'ALREADY_EXISTS',
      })
      expect((await readAll(await storage.get('ow_object.bin'))).toString()).toBe('first')
      await storage.put('ow_object.bin', Readable.from([Buffer.from('third')]))
      expect((await readAll(await storage.get('ow_object.bin'))).toString()).toBe('third')
    })

    it('a source stream that fails leaves nothing under the key and reports the source error', async () => {
      const source = chunked(randomBytes(failAfter), 256 * 1024, new Error('source failed: pg_dump died'))
      await expect(storage.put('fail_object.bin', source)).rejects.toThrow('source failed: pg_dump died')
      await expect(storage.stat('fail_object.bin')).resolves.toBeUndefined()
      await expect(storage.get('fail_object.bin')).rejects.toMatchObject({code: 'NOT_FOUND'})
      expect(await listed(storage, 'fail_')).toEqual({})
    })

    it('an aborted put leaves nothing under the key', async () => {
      const controller = new AbortController()
      let sent = 0
      const endless = new Readable({
        read() {
          setImmediate(() => {
            if (sent >= failAfter && !controller.signal.aborted) controller.abort()
            sent += 256 * 1024
            this.push(randomBytes(256 * 1024))
          })
        },
      })
      await expect(storage.put('abort_object.bin', endless, {signal: controller.signal})).rejects.toBeDefined()
      await expect(storage.stat('abort_object.bin')).resolves.toBeUndefined()
      expect(await listed(storage, 'abort_')).toEqual({})
    })

    it.each(['../escape.bin', '/absolute.bin', 'a//b.bin', 'a/./b.bin', 'a/../../b.bin', ''])('rejects the unsafe key %j', async (key) => {
      await expect(storage.put(key, Readable.from([Buffer.from('x')]))).rejects.toThrow(/invalid storage key/)
      await expect(storage.get(key)).rejects.toThrow(/invalid storage key/)
      await expect(storage.stat(key)).rejects.toThrow(/invalid storage key/)
      await expect(storage.delete(key)).rejects.toThrow(/invalid storage key/)
    })

    it('keeps large streamed objects intact (sha256 of what was sent equals what is read)', async () => {
      const data = randomBytes(3 * failAfter + 17)
      await storage.put('big_object.bin', chunked(data, 1024 * 1024))
      expect(sha256(await readAll(await storage.get('big_object.bin')))).toBe(sha256(data))
    })
  })
}

/** A stream of `data` in chunks of `size`, optionally failing with `error` after the last chunk. */
export function chunked(data: Buffer, size: number, error?: Error): Readable {
  async function* generate() {
    for (let offset = 0; offset < data.length; offset += size) {
      yield data.subarray(offset, offset + size)
      await new Promise((resolve) => setImmediate(resolve))
    }

    if (error) throw error
  }

  return Readable.from(generate())
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export async function listed(storage: StorageBackend, prefix: string, options?: ListOptions): Promise<Record<string, number>> {
  const result: Record<string, number> = {}
  for await (const object of storage.list(prefix, options)) result[object.key] = object.sizeBytes
  return result
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}
