import {forgetSecrets, registerSecret} from '../../src/secrets'
import {markingOutages} from '../../src/server/storage-outages'
import type {StorageBackend} from '../../src/storage/contract'
import {captureLogger, serveApp} from '../helpers/serve'

const TOKEN = 'unit-test-token-0123456789'
const AUTH = {Authorization: `Bearer ${TOKEN}`}

/** A storage whose every read fails with `failure` (a fake: what it proves is the error mapping, not a backend). */
function failingStorage(failure: () => Error): StorageBackend {
  return {
    name: 'fake',
    location: '/secret/internal/path',
    put: async () => ({sizeBytes: 0}),
    get: async () => {
      throw failure()
    },
    stat: async () => {
      throw failure()
    },
    async *list() {
      yield* []
      throw failure()
    },
    delete: async () => {},
    health: async () => {},
  }
}

function withCode(error: Error, code: string): Error {
  return Object.assign(error, {code})
}

describe('createApp error mapping (fake storage, real socket)', () => {
  const log = captureLogger()
  const cases: [string, () => Error, number, Record<string, unknown>][] = [
    [
      'a storage I/O error is a 503 with the backend message',
      () => withCode(new Error('EIO reading the backup directory'), 'EIO'),
      503,
      {error: 'STORAGE_UNAVAILABLE', message: 'storage (fake) unavailable: EIO reading the backup directory'},
    ],
    [
      'a network error of the backend is a 503',
      () => withCode(new TypeError('connect ECONNREFUSED 127.0.0.1:9'), 'ECONNREFUSED'),
      503,
      {error: 'STORAGE_UNAVAILABLE', message: 'storage (fake) unavailable: connect ECONNREFUSED 127.0.0.1:9'},
    ],
    [
      'a programming error in the backend stays a masked 500',
      () => new TypeError('Cannot read properties of undefined (reading "Contents") at /secret/internal/path'),
      500,
      {error: 'INTERNAL_ERROR', message: 'internal error (details are in the server log)'},
    ],
  ]

  it.each(cases)('%s', async (_what, failure, status, body) => {
    const served = await serveApp(failingStorage(failure), {token: TOKEN, logger: log.logger})
    try {
      for (const path of ['/api/v1/backups', '/api/v1/backups/latest', '/api/v1/backups/latest/download', '/info']) {
        const response = await fetch(`${served.base}${path}`, {headers: AUTH})
        expect([path, response.status]).toEqual([path, status])
        expect(await response.json()).toEqual(body)
      }
    } finally {
      await served.close()
    }

    if (status === 500) {
      expect(log.lines().find((line) => line.event === 'http.error')).toMatchObject({status: 500, error: expect.stringContaining('Contents')})
    }
  })

  it('leaves "no such object", an abort and a conflict as they are: they are answers, not outages', async () => {
    for (const code of ['NOT_FOUND', 'ALREADY_EXISTS', 'ABORT_ERR']) {
      const original = withCode(new Error(code), code)
      const storage = markingOutages(failingStorage(() => original))
      await expect(storage.get('x')).rejects.toBe(original)
      await expect(storage.stat('x')).rejects.toBe(original)
    }

    const outage = markingOutages(failingStorage(() => withCode(new Error('socket hang up'), 'ECONNRESET')))
    await expect(outage.get('x')).rejects.toMatchObject({code: 'STORAGE_UNAVAILABLE', message: 'storage (fake) unavailable: socket hang up'})
    const drain = async () => {
      for await (const object of outage.list('')) expect(object).toBeUndefined()
    }

    await expect(drain()).rejects.toMatchObject({code: 'STORAGE_UNAVAILABLE'})
  })

  it('accepts the token only with the Bearer scheme and the exact value', async () => {
    const served = await serveApp(failingStorage(() => new Error('unused')), {token: TOKEN, logger: log.logger})
    try {
      const attempts = [`Basic ${TOKEN}`, `Bearer ${TOKEN.slice(0, -1)}`, `Bearer  ${TOKEN}`, TOKEN]
      for (const authorization of attempts) {
        const response = await fetch(`${served.base}/api/v1/backups/jobs`, {headers: {Authorization: authorization}})
        expect([authorization, response.status]).toEqual([authorization, 401])
      }

      const ok = await fetch(`${served.base}/api/v1/backups/jobs`, {headers: AUTH})
      expect(ok.status).toBe(200)
      expect(await ok.json()).toEqual([])
      expect(log.text()).not.toContain(TOKEN)
    } finally {
      await served.close()
    }
  })
})

describe('error bodies never carry a secret value', () => {
  const log = captureLogger()
  afterEach(() => forgetSecrets())

  it('replaces a registered secret inside a backend message the client is shown', async () => {
    const secret = 'plugin-secret-value-42'
    registerSecret(secret)
    const failure = () => withCode(new Error(`request to https://user:${secret}@store.example failed`), 'ECONNRESET')
    const served = await serveApp(failingStorage(failure), {token: TOKEN, logger: log.logger})
    try {
      const response = await fetch(`${served.base}/api/v1/backups`, {headers: AUTH})
      const text = await response.text()
      expect(response.status).toBe(503)
      expect(text).not.toContain(secret)
      expect(text).toContain('[redacted]')
    } finally {
      await served.close()
    }
  })
})
