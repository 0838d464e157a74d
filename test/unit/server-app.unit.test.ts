import type {Server} from 'node:http'
import type {AddressInfo} from 'node:net'
import {Readable} from 'node:stream'

import type {StorageBackend} from '../../src/storage/contract'
import {createApp} from '../../src/server/app'
import {JobRegistry} from '../../src/server/jobs'
import {ServiceMetrics} from '../../src/server/metrics'
import {captureLogger} from '../helpers/serve'

const TOKEN = 'unit-test-token-0123456789'

/** A storage whose listing fails with an internal detail that must not reach HTTP clients. */
function brokenStorage(): StorageBackend {
  return {
    name: 'fake',
    location: '/secret/internal/path',
    put: async () => ({sizeBytes: 0}),
    get: async () => Readable.from([]),
    stat: async () => undefined,
    async *list() {
      yield* []
      throw new Error('EIO reading /secret/internal/path')
    },
    delete: async () => {},
    health: async () => {},
  }
}

describe('createApp error handling (fake storage, real socket)', () => {
  let server: Server
  let base: string
  const log = captureLogger()

  beforeAll(async () => {
    const app = createApp({
      apiToken: TOKEN,
      storage: brokenStorage(),
      database: {host: '127.0.0.1', port: 1, database: 'x', user: 'postgres'},
      namePrefix: 'backup',
      retention: {retentionDays: 7, orphanGraceMs: 1000},
      jobs: new JobRegistry({logger: log.logger, work: () => Promise.reject(new Error('unused'))}),
      metrics: new ServiceMetrics({defaultMetrics: false}),
      logger: log.logger,
      sidecarCache: new Map(),
      pgDumpVersion: '15.18',
      schedule: {describe: () => ({kind: 'interval', interval: 'PT24H', intervalSeconds: 86_400}), nextRunAt: () => undefined},
    })
    server = app.listen(0, '127.0.0.1')
    await new Promise((resolve) => server.once('listening', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve))
  })

  it('masks the message of a server error in the response and logs it in full', async () => {
    const response = await fetch(`${base}/api/v1/backups`, {headers: {Authorization: `Bearer ${TOKEN}`}})
    expect(response.status).toBe(500)
    const body = await response.json()
    expect(body).toEqual({error: 'INTERNAL_ERROR', message: 'internal error (details are in the server log)'})
    expect(JSON.stringify(body)).not.toContain('/secret')
    expect(log.lines().find((line) => line.event === 'http.error')).toMatchObject({status: 500, error: 'EIO reading /secret/internal/path'})
  })

  it('accepts the token only with the Bearer scheme and the exact value', async () => {
    const attempts = [`Basic ${TOKEN}`, `Bearer ${TOKEN.slice(0, -1)}`, `Bearer  ${TOKEN}`, TOKEN]
    for (const authorization of attempts) {
      const response = await fetch(`${base}/api/v1/backups/jobs`, {headers: {Authorization: authorization}})
      expect([authorization, response.status]).toEqual([authorization, 401])
    }

    const ok = await fetch(`${base}/api/v1/backups/jobs`, {headers: {Authorization: `Bearer ${TOKEN}`}})
    expect(ok.status).toBe(200)
    expect(await ok.json()).toEqual([])
    expect(log.text()).not.toContain(TOKEN)
  })
})
