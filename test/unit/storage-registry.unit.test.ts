import {Readable} from 'node:stream'

import {ConfigError, StoragePluginError} from '../../src/errors'
import type {StorageBackend, StorageProvider} from '../../src/storage/contract'
import {ProviderRegistry, addProvider, createBackend, selectProvider} from '../../src/storage/registry'
import {withTimeBound} from '../../src/storage/time-bound'

const logger = {debug() {}, info() {}, warn() {}}
const emptyRegistry = (): ProviderRegistry => ({providers: new Map(), plugins: new Map(), refused: new Map(), problems: []})

function backend(overrides: Partial<StorageBackend> = {}): StorageBackend {
  return {
    name: 'fake',
    location: 'fake:/',
    put: async () => ({sizeBytes: 0}),
    get: async () => Readable.from([]),
    stat: async () => undefined,
    async *list() {},
    delete: async () => undefined,
    health: async () => undefined,
    ...overrides,
  }
}

function provider(overrides: Partial<StorageProvider> = {}): StorageProvider {
  return {
    name: 'webdav',
    summary: 'WebDAV',
    contractVersion: 2,
    settings: [{env: 'WEBDAV_URL', flag: 'webdav-url', summary: 'Server URL.', example: 'https://dav.example'}],
    create: async () => backend(),
    ...overrides,
  }
}

const never = () => new Promise<never>(() => undefined)

describe('storage provider diagnostics', () => {
  it('names the invalid field: an upper-case name, a flag with a space', () => {
    const registry = emptyRegistry()
    addProvider(registry, 'dbb-storage-webdav2', provider({name: 'WebDAV2'}))
    addProvider(registry, 'dbb-storage-spaced', provider({name: 'spaced', settings: [{env: 'SPACED_URL', flag: 'spaced url', summary: 's', example: 'x'}]}))
    expect(registry.providers.size).toBe(0)
    expect(registry.problems[0]).toContain('plugin dbb-storage-webdav2 answered dbb:storage-provider with an invalid storage provider: name "WebDAV2" is invalid')
    expect(registry.problems[1]).toContain('setting SPACED_URL: flag "spaced url" is invalid')
    // Selecting it says why, instead of "unknown storage backend".
    expect(() => selectProvider(registry, 'webdav2')).toThrow(/storage backend "webdav2" cannot be used: plugin dbb-storage-webdav2 .*name "WebDAV2" is invalid/)
  })

  it('refuses a provider built for an incompatible contract version, naming the plugin and both versions (exit 2)', () => {
    const registry = emptyRegistry()
    addProvider(registry, 'dbb-storage-future', provider({name: 'future', contractVersion: 3}))
    let error: unknown
    try {
      selectProvider(registry, 'future')
    } catch (caught) {
      error = caught
    }

    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).exitCode).toBe(2)
    expect((error as ConfigError).message).toContain('plugin dbb-storage-future (storage backend "future") was built for storage contract version 3; this dbb supports versions 1 to 2')
  })

  it('reads a provider without contractVersion as version 1 (written before the contract package) and accepts it', () => {
    const registry = emptyRegistry()
    addProvider(registry, 'dbb-storage-old', provider({name: 'old', contractVersion: undefined}))
    expect(selectProvider(registry, 'old').name).toBe('old')
  })

  it('warns about and ignores a plugin setting that is dbb\'s own (DB_PASSWORD, STORAGE_BACKEND, a core flag)', () => {
    const registry = emptyRegistry()
    const settings = [
      {env: 'DB_PASSWORD', flag: 'greedy-password', summary: 'p', example: 'x'},
      {env: 'STORAGE_BACKEND', flag: 'greedy-backend', summary: 'b', example: 'x'},
      {env: 'GREEDY_HOST', flag: 'db-host', summary: 'h', example: 'x'},
      {env: 'GREEDY_URL', flag: 'greedy-url', summary: 'u', example: 'x'},
    ]
    addProvider(registry, 'dbb-storage-greedy', provider({name: 'greedy', settings}))
    expect(registry.providers.get('greedy')!.settings.map((setting) => setting.env)).toEqual(['GREEDY_URL'])
    expect(registry.problems).toEqual([
      expect.stringContaining('plugin dbb-storage-greedy declares DB_PASSWORD, a setting of dbb itself; ignored'),
      expect.stringContaining('plugin dbb-storage-greedy declares STORAGE_BACKEND, a setting of dbb itself; ignored'),
      expect.stringContaining('plugin dbb-storage-greedy declares --db-host, a setting of dbb itself; ignored'),
    ])
  })

  it('refuses at creation a backend without list(), naming the plugin and the method (exit 2)', async () => {
    const incomplete = {...backend()} as Partial<StorageBackend>
    delete incomplete.list
    const creating = createBackend(provider({create: async () => incomplete as StorageBackend}), {}, {logger}, 'dbb-storage-webdav')
    await expect(creating).rejects.toBeInstanceOf(StoragePluginError)
    await expect(creating).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringContaining('storage plugin dbb-storage-webdav: the backend "webdav" returned by create() does not implement the storage contract: list() is missing'),
    })
  })

  it('passes a provider only its own settings', async () => {
    let seen: object | undefined
    await createBackend(provider({create: async (settings) => ((seen = settings), backend())}), {WEBDAV_URL: 'u', DB_PASSWORD: 'secret'}, {logger})
    expect(seen).toEqual({WEBDAV_URL: 'u'})
  })
})

describe('the time bound core enforces around a backend', () => {
  const bounded = (overrides: Partial<StorageBackend>) => withTimeBound(backend({timeBoundMs: 200, ...overrides}), {plugin: 'dbb-storage-hang'})
  const within = async (promise: Promise<unknown>, ms: number) => {
    const started = Date.now()
    const error = await promise.then(() => undefined, (caught: Error) => caught)
    expect(Date.now() - started).toBeLessThan(ms)
    return error
  }

  it('fails a call that never settles after the bound plus grace, naming the plugin, the operation and the location', async () => {
    const error = await within(bounded({stat: never}).stat('x.bin'), 3000)
    expect(error).toMatchObject({code: 'STORAGE_TIMEOUT', message: expect.stringContaining('storage backend "fake" (plugin dbb-storage-hang) did not answer stat of x.bin within 1.2 s')})
    expect(error?.message).toContain('fake:/ is not responding')
    for (const call of [(s: StorageBackend) => s.health(), (s: StorageBackend) => s.delete('x'), (s: StorageBackend) => s.get('x')]) {
      await within(call(bounded({health: never, delete: never, get: never})), 3000)
    }
  })

  it('fails a listing whose next page never comes', async () => {
    const hanging = bounded({
      async *list() {
        yield {key: 'a', sizeBytes: 1, lastModified: new Date()}
        await never()
      },
    })
    const keys: string[] = []
    const error = await within(
      (async () => {
        for await (const object of hanging.list('')) keys.push(object.key)
      })(),
      3000,
    )
    expect(keys).toEqual(['a'])
    expect(error).toMatchObject({code: 'STORAGE_TIMEOUT'})
  })

  it('fails a put whose backend stops taking the body, and aborts it', async () => {
    let signal: AbortSignal | undefined
    const stuck = bounded({
      put: (_key, body, options) => {
        signal = options?.signal
        body.once('readable', () => undefined)
        return never()
      },
    })
    const body = Readable.from((function* () {
      for (let index = 0; index < 100; index += 1) yield Buffer.alloc(64 * 1024)
    })())
    const error = await within(stuck.put('x.bin', body), 3000)
    expect(error).toMatchObject({code: 'STORAGE_TIMEOUT', message: expect.stringContaining('the write of x.bin (it stopped taking data)')})
    expect(signal?.aborted).toBe(true)
  })

  it('does not count a slow source against the backend: a put whose body takes longer than the bound succeeds', async () => {
    const stored: Buffer[] = []
    const storage = bounded({
      put: async (_key, body) => {
        for await (const chunk of body) stored.push(chunk as Buffer)
        return {sizeBytes: Buffer.concat(stored).length}
      },
    })
    async function* slowDump() {
      yield Buffer.from('first ')
      await new Promise((resolve) => setTimeout(resolve, 1800))
      yield Buffer.from('second')
    }

    await expect(storage.put('x.bin', Readable.from(slowDump()))).resolves.toEqual({sizeBytes: 12})
    expect(Buffer.concat(stored).toString()).toBe('first second')
  })

  it('passes a source error to the backend unchanged', async () => {
    const storage = bounded({
      put: async (_key, body) => {
        for await (const chunk of body) void chunk
        return {sizeBytes: 0}
      },
    })
    async function* failing() {
      yield Buffer.from('x')
      throw new Error('pg_dump died')
    }

    await expect(storage.put('x.bin', Readable.from(failing()))).rejects.toThrow('pg_dump died')
  })

  it('fails a get stream that goes silent while its reader waits, but not one whose reader is busy', async () => {
    const silentAfterOne = bounded({get: async () => new Readable({read() {
      if (!(this as {sent?: boolean}).sent) {
        ;(this as {sent?: boolean}).sent = true
        this.push(Buffer.from('x'))
      }
    }})})
    const stream = await silentAfterOne.get('x.bin')
    const error = await within((async () => {
      for await (const chunk of stream) void chunk
    })(), 3000)
    expect(error).toMatchObject({code: 'STORAGE_TIMEOUT'})

    const busyReader = await bounded({get: async () => Readable.from([Buffer.from('a'), Buffer.from('b')])}).get('y.bin')
    const chunks: string[] = []
    for await (const chunk of busyReader) {
      chunks.push(String(chunk))
      await new Promise((resolve) => setTimeout(resolve, 1500))
    }

    expect(chunks.join('')).toBe('ab')
  })
})
