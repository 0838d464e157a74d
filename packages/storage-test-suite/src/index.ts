import * as assert from 'node:assert/strict'
import {createHash, randomBytes} from 'node:crypto'
import * as net from 'node:net'
import {Readable} from 'node:stream'
import {types} from 'node:util'

import {
  CONTRACT_VERSION,
  MIN_SUPPORTED_CONTRACT_VERSION,
  backendProblems,
  isSafeKey,
  providerProblems,
} from '@dbb/storage-contract'
import type {ListOptions, StagedLeftover, StorageBackend, StorageProvider} from '@dbb/storage-contract'

/**
 * The conformance kit of the dbb storage contract (@dbb/storage-contract): each rule written in the
 * contract's doc comments, as a test case. It imports no test runner. With any runner that has a
 * `test(name, fn)` (jest, vitest, node:test, mocha's `it`, tap):
 *
 *     storageTestSuite(test, {name: 'webdav', create: async () => provider.create(settingsForAFreshLocation, context)})
 *
 * or take the cases and run them yourself: `for (const c of storageTestCases(target)) await c.run()`.
 * A case throws (node:assert) when the backend breaks a rule. Each case gets a backend of its own
 * from `create()`, on an empty location nothing else uses (a temp directory, a fresh prefix), and
 * closes it afterwards. Give the runner a per-test timeout above a minute (the large-object and
 * many-keys cases move data; the time-bound case waits up to the backend's `timeBoundMs`).
 */
export interface StorageTestTarget {
  /** For case names, e.g. `webdav`. */
  name: string
  /** A ready backend on an empty location of its own (called once per case). */
  create(): Promise<StorageBackend>
  /** Removes what `create()` set up (the temp directory, the prefix), after the backend was closed. */
  destroy?(backend: StorageBackend): Promise<void>
  /** The provider, or the plugin's hook itself (a function returning it): its fields are checked as dbb checks them. */
  provider?: StorageProvider | (() => StorageProvider | Promise<StorageProvider>)
  /** Bytes a failing or aborted source sends first: enough that the write is under way (e.g. a multipart upload started). Default 1 MiB. */
  bytesBeforeFailure?: number
  /**
   * Whether `overwrite: false` is atomic against a concurrent writer. Where it is best effort (an
   * existence check before the write), only the sequential case is checked — what it promises.
   */
  atomicNoOverwrite?: boolean
  /** Keys the many-keys case stores and lists (default 1,050: more than an S3 page of 1,000). */
  manyKeys?: number
  /**
   * A networked backend MUST provide this: a backend like `create()`'s, but pointed at `endpoint`,
   * a server on 127.0.0.1 that accepts connections and never answers. Every operation must then
   * fail within the backend's `timeBoundMs`, naming the endpoint. Backends without a network
   * (a file system) leave it out, and the case is not generated.
   */
  unresponsive?(endpoint: {host: string; port: number; url: string}): Promise<StorageBackend>
  /** The backend implements `sweep` (staged data: temp files, multipart uploads): its cases run. */
  sweeps?: boolean
  /**
   * For a backend with `sweep`: leave staged data for `key` as a writer killed mid-write would (a
   * temp file, an incomplete multipart upload), started now. Absent: only the rule that `sweep`
   * never touches a write in progress is checked.
   */
  leaveLeftover?(backend: StorageBackend, key: string): Promise<void>
}

export interface StorageTestCase {
  name: string
  run(): Promise<void>
}

const MIB = 1024 * 1024

/** Registers every case with the runner's `test` function. */
export function storageTestSuite(test: (name: string, fn: () => Promise<void>) => unknown, target: StorageTestTarget): void {
  for (const testCase of storageTestCases(target)) test(testCase.name, () => testCase.run())
}

/** The cases for this target, each runnable on its own. */
export function storageTestCases(target: StorageTestTarget): StorageTestCase[] {
  const failAfter = target.bytesBeforeFailure ?? MIB
  const cases: StorageTestCase[] = []
  const add = (name: string, body: (storage: StorageBackend) => Promise<void>) => {
    cases.push({
      name,
      async run() {
        const storage = await target.create()
        try {
          await body(storage)
        } finally {
          await storage.close?.()
          await target.destroy?.(storage)
        }
      },
    })
  }

  if (target.provider) {
    const given = target.provider
    cases.push({
      name: 'the provider has valid fields and a supported contract version',
      async run() {
        const provider = typeof given === 'function' ? await given() : given
        assert.deepEqual(providerProblems(provider), [])
        const version = provider.contractVersion ?? 1
        assert.ok(
          version >= MIN_SUPPORTED_CONTRACT_VERSION && version <= CONTRACT_VERSION,
          `contractVersion ${version} is outside ${MIN_SUPPORTED_CONTRACT_VERSION}..${CONTRACT_VERSION}`,
        )
      },
    })
  }

  add('create() returns a backend with every method of the contract', async (storage) => {
    assert.deepEqual(backendProblems(storage), [])
  })

  add('health() resolves for a usable location', async (storage) => {
    assert.equal(await storage.health(), undefined)
  })

  add('stores a stream and returns exactly its bytes, including an empty object', async (storage) => {
    const data = randomBytes(MIB + 123)
    assert.deepEqual(await storage.put('rt_object.bin', chunked(data, 64 * 1024)), {sizeBytes: data.length})
    assert.ok((await readAll(await storage.get('rt_object.bin'))).equals(data), 'the bytes read differ from the bytes stored')
    assert.deepEqual(await storage.put('rt_empty.bin', Readable.from([])), {sizeBytes: 0})
    assert.equal((await readAll(await storage.get('rt_empty.bin'))).length, 0)
  })

  add('reads byte ranges: inclusive at both ends, a single byte, to the end, and from the end (empty)', async (storage) => {
    const data = randomBytes(300_000)
    await storage.put('range_object.bin', chunked(data, 64 * 1024))
    const range = async (start?: number, end?: number) => readAll(await storage.get('range_object.bin', {start, end}))
    assert.ok((await range(100, 199)).equals(data.subarray(100, 200)), 'bytes 100-199')
    assert.ok((await range(70_000, 200_000)).equals(data.subarray(70_000, 200_001)), 'a range across chunk boundaries')
    assert.ok((await range(5, 5)).equals(data.subarray(5, 6)), 'a single byte')
    assert.ok((await range(0, 0)).equals(data.subarray(0, 1)), 'the first byte')
    assert.ok((await range(299_990)).equals(data.subarray(299_990)), 'from an offset to the end')
    assert.equal((await range(data.length)).length, 0, 'a range starting at the size is empty')
  })

  add('stat() gives size and modification time, and undefined for a missing key', async (storage) => {
    const before = Date.now()
    await storage.put('stat_object.bin', Readable.from([Buffer.alloc(4321, 7)]))
    const info = await storage.stat('stat_object.bin')
    assert.ok(info, 'stat of a stored key resolved to undefined')
    assert.equal(info.key, 'stat_object.bin')
    assert.equal(info.sizeBytes, 4321)
    assert.ok(types.isDate(info.lastModified), 'lastModified is a Date')
    // Stores keep whole seconds; allow for that and a little clock skew.
    assert.ok(info.lastModified.getTime() >= before - 5000 && info.lastModified.getTime() <= Date.now() + 5000, `lastModified ${info.lastModified.toISOString()} is not the time of the write`)
    assert.equal(await storage.stat('stat_missing.bin'), undefined)
  })

  add('lists by prefix, keys of any depth, each once with its size', async (storage) => {
    const objects: Record<string, number> = {lst_a: 1, lst_b: 22, 'lst-other': 3, 'wal/lst_1': 44, 'wal/sub/lst_2': 5}
    for (const [key, size] of Object.entries(objects)) await storage.put(key, Readable.from([Buffer.alloc(size, 1)]))
    assert.deepEqual(await listed(storage, 'lst_'), {lst_a: 1, lst_b: 22})
    assert.deepEqual(await listed(storage, 'wal/'), {'wal/lst_1': 44, 'wal/sub/lst_2': 5})
    assert.deepEqual(await listed(storage, 'wal/sub/'), {'wal/sub/lst_2': 5})
    assert.deepEqual(await listed(storage, 'wal/lst'), {'wal/lst_1': 44})
    assert.deepEqual(await listed(storage, 'lst_nothing'), {})
    const all = await listed(storage, '')
    for (const [key, size] of Object.entries(objects)) assert.equal(all[key], size, `listing '' lacks ${key}`)
  })

  add('lists only keys after startAfter (byte order), from inside or before the prefix', async (storage) => {
    for (const key of ['saf/000000010000000000000001', 'saf/000000010000000000000002', 'saf/000000020000000000000001', 'saf/00000002.history']) {
      await storage.put(key, Readable.from([Buffer.from('x')]))
    }

    const after = async (startAfter: string) => Object.keys(await listed(storage, 'saf/', {startAfter})).sort()
    // '.' sorts before '0': a timeline's history file comes before its segments.
    assert.deepEqual(await after('saf/000000010000000000000001'), ['saf/000000010000000000000002', 'saf/00000002.history', 'saf/000000020000000000000001'])
    assert.deepEqual(await after('saf/00000002'), ['saf/00000002.history', 'saf/000000020000000000000001'])
    assert.equal((await after('a')).length, 4)
    assert.deepEqual(await after('saf/9'), [])
  })

  const manyKeys = target.manyKeys ?? 1050
  add(`lists ${manyKeys} keys under one prefix, each once, and the tail after startAfter`, async (storage) => {
    const keys = Array.from({length: manyKeys}, (_, index) => `many/k${String(index).padStart(6, '0')}`)
    await inParallel(keys, 16, (key) => storage.put(key, Readable.from([Buffer.from(key)])))
    const seen: string[] = []
    for await (const object of storage.list('many/')) seen.push(object.key)
    assert.equal(seen.length, manyKeys, `listed ${seen.length} keys, stored ${manyKeys}`)
    assert.deepEqual([...new Set(seen)].sort(), keys)
    const middle = keys[Math.floor(manyKeys / 2)]
    const tail = Object.keys(await listed(storage, 'many/', {startAfter: middle})).sort()
    assert.deepEqual(tail, keys.filter((key) => key > middle))
  })

  add('deletes a key, and deleting a missing key succeeds', async (storage) => {
    await storage.put('del_object.bin', Readable.from([Buffer.from('bye')]))
    await storage.delete('del_object.bin')
    assert.equal(await storage.stat('del_object.bin'), undefined)
    await assert.rejects(storage.get('del_object.bin'), {code: 'NOT_FOUND'})
    await storage.delete('del_never_existed.bin')
  })

  add('get() of a missing key rejects with code NOT_FOUND', async (storage) => {
    await assert.rejects(storage.get('missing_object.bin'), {code: 'NOT_FOUND'})
    await assert.rejects(storage.get('missing_dir/missing_object.bin'), {code: 'NOT_FOUND'})
  })

  add(`overwrite:false onto an existing key fails with ALREADY_EXISTS and keeps the original${target.atomicNoOverwrite === false ? ' (best effort: sequential case)' : ''}`, async (storage) => {
    await storage.put('ow_object.bin', Readable.from([Buffer.from('first')]), {overwrite: false})
    await assert.rejects(storage.put('ow_object.bin', Readable.from([Buffer.from('second')]), {overwrite: false}), {code: 'ALREADY_EXISTS'})
    assert.equal((await readAll(await storage.get('ow_object.bin'))).toString(), 'first')
    await storage.put('ow_object.bin', Readable.from([Buffer.from('third')]))
    assert.equal((await readAll(await storage.get('ow_object.bin'))).toString(), 'third')
  })

  add('a source stream that fails leaves nothing under the key and rejects with the source error', async (storage) => {
    const source = chunked(randomBytes(failAfter), 256 * 1024, new Error('source failed: pg_dump died'))
    await assert.rejects(storage.put('fail_object.bin', source), /source failed: pg_dump died/)
    assert.equal(await storage.stat('fail_object.bin'), undefined)
    await assert.rejects(storage.get('fail_object.bin'), {code: 'NOT_FOUND'})
    assert.deepEqual(await listed(storage, 'fail_'), {})
  })

  add('an aborted put rejects and leaves nothing under the key', async (storage) => {
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
    await assert.rejects(storage.put('abort_object.bin', endless, {signal: controller.signal}))
    assert.equal(await storage.stat('abort_object.bin'), undefined)
    assert.deepEqual(await listed(storage, 'abort_'), {})
  })

  add('refuses every unsafe key (isSafeKey) with code INVALID_KEY in put, get, stat and delete', async (storage) => {
    const unsafe = ['../escape.bin', '/absolute.bin', 'a//b.bin', 'a/./b.bin', 'a/../../b.bin', '', 'dir/', 'back\\slash.bin', 'nul\0.bin', 'x'.repeat(1025)]
    for (const key of unsafe) {
      assert.equal(isSafeKey(key), false)
      const what = `key ${JSON.stringify(key.length > 40 ? `${key.slice(0, 10)}…(${key.length})` : key)}`
      await assert.rejects(storage.put(key, Readable.from([Buffer.from('x')])), {code: 'INVALID_KEY'}, `put of ${what}`)
      await assert.rejects(storage.get(key), {code: 'INVALID_KEY'}, `get of ${what}`)
      await assert.rejects(storage.stat(key), {code: 'INVALID_KEY'}, `stat of ${what}`)
      await assert.rejects(storage.delete(key), {code: 'INVALID_KEY'}, `delete of ${what}`)
    }
  })

  add('keeps large streamed objects intact (sha256 of what was sent equals what is read)', async (storage) => {
    const data = randomBytes(3 * failAfter + 17)
    await storage.put('big_object.bin', chunked(data, MIB))
    assert.equal(sha256(await readAll(await storage.get('big_object.bin'))), sha256(data))
  })

  if (target.sweeps || target.leaveLeftover) add('sweep never touches a write in progress, and a dry run removes nothing', async (storage) => {
    assert.ok(storage.sweep, 'the target says the backend sweeps, but it has no sweep()')
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    const data = randomBytes(failAfter + 1000)
    async function* slow() {
      yield data.subarray(0, failAfter)
      await released
      yield data.subarray(failAfter)
    }

    const writing = storage.put('sweep_inflight.bin', Readable.from(slow()))
    await new Promise((resolve) => setTimeout(resolve, 500))
    for (const options of [{dryRun: true}, {}]) {
      const swept = await storage.sweep(new Date(Date.now() - 60_000), options)
      assert.deepEqual(swept.filter((leftover) => leftover.key.startsWith('sweep_inflight.bin')), [], 'sweep took a write started after olderThan')
    }

    release()
    await writing
    assert.ok((await readAll(await storage.get('sweep_inflight.bin'))).equals(data))
  })

  if (target.leaveLeftover) {
    const leaveLeftover = target.leaveLeftover
    add('sweep removes staged leftovers older than olderThan (a dry run reports them and removes nothing), and no stored object', async (storage) => {
      assert.ok(storage.sweep, 'leaveLeftover is given but the backend has no sweep()')
      await storage.put('kept_object.bin', Readable.from([Buffer.from('keep me')]))
      await leaveLeftover(storage, 'left_over.bin')
      const future = () => new Date(Date.now() + 1000)
      const ours = (leftovers: StagedLeftover[]) => leftovers.filter((leftover) => leftover.key.startsWith('left_over.bin'))
      assert.equal(ours(await storage.sweep(future(), {dryRun: true})).length, 1, 'a dry run reports the leftover')
      assert.equal(ours(await storage.sweep(future(), {dryRun: true})).length, 1, 'a dry run removed the leftover')
      const swept = ours(await storage.sweep(future()))
      assert.equal(swept.length, 1, 'sweep removes the leftover')
      assert.ok(types.isDate(swept[0].startedAt) && typeof swept[0].kind === 'string' && typeof swept[0].sizeBytes === 'number')
      assert.deepEqual(ours(await storage.sweep(future())), [], 'the leftover is gone')
      assert.equal((await readAll(await storage.get('kept_object.bin'))).toString(), 'keep me')
      assert.equal(await storage.stat('left_over.bin'), undefined)
    })
  }

  if (target.unresponsive) {
    const unresponsive = target.unresponsive
    cases.push({
      name: 'against a server that accepts and never answers, every operation fails within timeBoundMs, naming the endpoint',
      async run() {
        const server = await silentServer()
        const address = server.address() as net.AddressInfo
        const endpoint = {host: '127.0.0.1', port: address.port, url: `http://127.0.0.1:${address.port}`}
        let storage: StorageBackend | undefined
        try {
          storage = await unresponsive(endpoint)
          const bound = storage.timeBoundMs
          assert.ok(typeof bound === 'number' && bound > 0, 'a networked backend declares timeBoundMs')
          const limit = bound + Math.max(1000, bound / 10)
          const backend = storage
          const operations: Record<string, () => Promise<unknown>> = {
            health: () => backend.health(),
            stat: () => backend.stat('hang.bin'),
            get: async () => readAll(await backend.get('hang.bin')),
            list: async () => listed(backend, ''),
            delete: () => backend.delete('hang.bin'),
            put: () => backend.put('hang.bin', Readable.from([randomBytes(64 * 1024)])),
          }
          const outcomes = await Promise.all(
            Object.entries(operations).map(async ([operation, call]) => {
              const started = Date.now()
              const outcome = await Promise.race([
                call().then(
                  () => ({operation, error: undefined as unknown}),
                  (error: unknown) => ({operation, error}),
                ),
                new Promise<{operation: string; error: unknown; late: true}>((resolve) => setTimeout(() => resolve({operation, error: undefined, late: true}), limit + 5000)),
              ])
              return {...outcome, elapsed: Date.now() - started}
            }),
          )
          for (const outcome of outcomes) {
            assert.ok(!('late' in outcome), `${outcome.operation}() was still waiting after ${outcome.elapsed} ms (timeBoundMs ${bound})`)
            assert.ok(types.isNativeError(outcome.error), `${outcome.operation}() succeeded against a server that never answers`)
            assert.ok(outcome.elapsed <= limit, `${outcome.operation}() failed after ${outcome.elapsed} ms, beyond timeBoundMs ${bound}`)
            assert.ok(outcome.error.message.includes(String(endpoint.port)), `${outcome.operation}()'s error does not name the endpoint: ${outcome.error.message}`)
          }
        } finally {
          await storage?.close?.()
          server.closeAllConnections?.()
          await new Promise((resolve) => server.close(resolve))
        }
      },
    })
  }

  return cases
}

/** A TCP server on 127.0.0.1 that accepts connections, reads what is sent, and never answers. */
async function silentServer(): Promise<net.Server & {closeAllConnections?: () => void}> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => undefined)
    socket.on('close', () => sockets.delete(socket))
    socket.resume()
  }) as net.Server & {closeAllConnections?: () => void}
  server.closeAllConnections = () => {
    for (const socket of sockets) socket.destroy()
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

async function inParallel<T>(items: T[], width: number, work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({length: Math.min(width, items.length)}, async () => {
      while (next < items.length) await work(items[next++])
    }),
  )
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

/** Every key under `prefix` with its size. */
export async function listed(storage: StorageBackend, prefix: string, options?: ListOptions): Promise<Record<string, number>> {
  const result: Record<string, number> = {}
  for await (const object of storage.list(prefix, options)) result[object.key] = object.sizeBytes
  return result
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}
