import * as fs from 'node:fs/promises'
import * as http from 'node:http'

import type {Route} from '../../src/server/routes/route'
import type {RunningService} from '../../src/server/service'
import {tempDir} from '../helpers/cli'
import {writeLocalBackup} from '../helpers/fake-backups'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {captureLogger, startApiService} from '../helpers/serve'

const TOKEN = 'route-spelling-token-0123456789abcdef'
const DUMP_MARKER = 'ROUTE-SPELLING-DUMP-CONTENT'
const METHODS = ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'DELETE'] as const

interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

/** A concrete path for a declared one: `:id` is the backup every test can download, other parameters get a sample. */
function concretePath(route: Route): string {
  return route.path.replace(/:id\b/g, 'latest').replace(/:[A-Za-z]+/g, 'sample')
}

function percentEncoded(text: string, upper = true): string {
  return [...text].map((character) => `%${character.charCodeAt(0).toString(16).padStart(2, '0')[upper ? 'toUpperCase' : 'toLowerCase']()}`).join('')
}

/**
 * Every other spelling of `path` that a router, a proxy or a URL parser might read as the same
 * resource (issue 11 hole 1). Generated from the path alone, so a route added later gets them all.
 */
function spellings(path: string): string[] {
  const segments = path.split('/').slice(1)
  const join = (parts: string[]) => `/${parts.join('/')}`
  const variants = new Set<string>([
    path.toUpperCase(),
    `${path}/`,
    `${path}//`,
    `/${path}`,
    `${path}/.`,
    `${path}/./`,
    `${path}%2F`,
    `${path}%2f`,
    `${path};x`,
    `${path}%00`,
    `${path}%20`,
    `/${path.slice(1).replaceAll('/', '\\')}`,
    `/.${path}`,
    `/x/..${path}`,
    `/%2e${path}`,
    `/%2E%2E${path}`,
  ])
  segments.forEach((segment, index) => {
    const replaced = (replacement: string) => join(segments.map((part, at) => (at === index ? replacement : part)))
    variants.add(replaced(segment.toUpperCase()))
    variants.add(replaced(segment.charAt(0).toUpperCase() + segment.slice(1)))
    variants.add(replaced(percentEncoded(segment.charAt(0)) + segment.slice(1)))
    variants.add(replaced(percentEncoded(segment.charAt(0), false) + segment.slice(1)))
    variants.add(replaced(percentEncoded(segment)))
    variants.add(replaced(`${segment}/`))
    variants.add(replaced(`./${segment}`))
    variants.add(replaced(`x/../${segment}`))
    variants.add(replaced(`x/%2e%2e/${segment}`))
    if (index > 0) {
      // Joined to the previous segment by an encoded slash, and a doubled slash before it.
      variants.add(join([...segments.slice(0, index - 1), `${segments[index - 1]}%2F${segment}`, ...segments.slice(index + 1)]))
      variants.add(replaced(`/${segment}`))
    }
  })
  variants.delete(path)
  return [...variants]
}

/** Spellings that are the canonical path to every parser: they must behave exactly like it. */
function equivalents(path: string, port: number): string[] {
  return [`${path}?`, `${path}?x=1`, `http://127.0.0.1:${port}${path}`, `http://127.0.0.1:${port}${path}?x=1`]
}

/**
 * Issue 11 hole 1: `GET /API/v1/backups/latest/download` returned the dump without a token. For
 * EVERY declared route (read from the running service, so a route added later is covered), every
 * spelling and every method: without the token, 401 (a public route's own path excepted), never a
 * 2xx/3xx nor a byte of a dump; with the token, the canonical path answers as declared and another
 * spelling of its fixed parts is 404 — the router serves one spelling, so a reverse proxy's rules
 * for `/api/` cover everything dbb serves. Requests go through node:http with the path byte for byte.
 */
describe('REST routes under every spelling (real HTTP, real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let service: RunningService
  let port: number
  const agent = new http.Agent({keepAlive: true, maxSockets: 8})

  function request(method: string, target: string, headers: Record<string, string> = {}): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const outgoing = http.request({host: '127.0.0.1', port, method, path: target, headers, agent}, (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () => resolve({status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks)}))
      })
      outgoing.on('error', reject)
      outgoing.end()
    })
  }

  async function inBatches<T, R>(items: T[], size: number, run: (item: T) => Promise<R>): Promise<R[]> {
    const results: R[] = []
    for (let start = 0; start < items.length; start += size) results.push(...(await Promise.all(items.slice(start, start + size).map(run))))
    return results
  }

  function expectUnauthorized(response: RawResponse, what: string): void {
    expect([what, response.status]).toEqual([what, 401])
    expect([what, String(response.headers['www-authenticate'])]).toEqual([what, expect.stringMatching(/^Bearer realm="dbb"/)])
    expect([what, response.body.toString('latin1').includes('backup_')]).toEqual([what, false])
  }

  beforeAll(async () => {
    cluster = await startPostgres()
    backupDir = await tempDir('dbb-spellings-')
    await writeLocalBackup(backupDir, new Date('2026-11-21T03:00:00Z'), {sql: `-- ${DUMP_MARKER}\nSELECT 1;\n`})
    service = await startApiService(cluster, 'postgres', backupDir, {token: TOKEN, logger: captureLogger().logger})
    port = Number(new URL(service.url).port)
  })

  afterAll(async () => {
    agent.destroy()
    await service?.shutdown('tests done')
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  it('declares the API routes as token routes and only /health, /info and /metrics as public', () => {
    const declared = service.routes.map((route) => `${route.auth} ${route.method} ${route.path}`).sort()
    expect(declared).toEqual(
      [
        'public GET /health',
        'public GET /info',
        'public GET /metrics',
        'token GET /api/v1/backups',
        'token GET /api/v1/backups/:id/download',
        'token GET /api/v1/backups/jobs',
        'token GET /api/v1/backups/jobs/:jobId',
        'token GET /api/v1/backups/latest',
        'token POST /api/v1/backups',
        'token GET /api/v1/backups/:id/drill',
        'token POST /api/v1/backups/:id/drill',
        'token GET /api/v1/drills/jobs/:jobId',
        'token POST /api/v1/drills',
      ].sort(),
    )
  })

  it('answers every declared route, under every spelling and method, with exactly its declared auth', async () => {
    const paths = [...new Set(service.routes.map((route) => concretePath(route)))]
    const publicPaths = new Set(service.routes.filter((route) => route.auth === 'public').map((route) => concretePath(route)))
    let checked = 0

    for (const path of paths) {
      const isPublic = publicPaths.has(path)
      // The canonical answers with the token (POST starts at most one backup: 202 first, then 409 while it runs).
      const canonical = new Map<string, number>()
      for (const method of METHODS) canonical.set(method, (await request(method, path, {Authorization: `Bearer ${TOKEN}`})).status)

      const cases = METHODS.flatMap((method) => [
        ...spellings(path).map((target) => ({method, target, equivalent: false})),
        ...equivalents(path, port).map((target) => ({method, target, equivalent: true})),
      ])
      await inBatches(cases, 8, async ({method, target, equivalent}) => {
        const what = `${method} ${target}`
        const anonymous = await request(method, target)
        const withToken = await request(method, target, {Authorization: `Bearer ${TOKEN}`})
        const queryToken = await request(method, `${target}${target.includes('?') ? '&' : '?'}access_token=${TOKEN}`)
        checked += 3
        // Nothing of a dump (gzip starts with 1f 8b) reaches a client without the token in the header.
        for (const response of [anonymous, queryToken]) {
          const leaked = response.body.subarray(0, 2).toString('hex') === '1f8b' || response.body.includes(DUMP_MARKER)
          expect([what, leaked]).toEqual([what, false])
        }

        if (equivalent) {
          const expected = canonical.get(method)!
          // (A drill result appears while this test's POSTs start drills: 404, then 200.)
          const drillResult = ['GET', 'HEAD'].includes(method) && path.endsWith('/drill') && [200, 404].includes(expected)
          const sameAs = (status: number) =>
            method === 'POST' && [202, 409].includes(expected) ? [202, 409].includes(status) : drillResult ? [200, 404].includes(status) : status === expected
          expect([what, sameAs(withToken.status)]).toEqual([what, true])
          if (isPublic) expect([what, sameAs(anonymous.status)]).toEqual([what, true])
          else expectUnauthorized(anonymous, what)
        } else {
          expectUnauthorized(anonymous, what)
          // The fixed parts of a path have one spelling (404 otherwise); a parameter is URL-decoded as
          // usual (`%6Catest` is `latest`) and then validated (400), but always behind the same auth.
          // A POST that starts a job (202) answers 409 while that job runs, whichever spelling reached it;
          // and the drills those POSTs start (and the backup that makes a new `latest`) turn a drill
          // result's "never drilled" (404) into 200 during this test.
          const started = method === 'POST' && [202, 409].includes(canonical.get(method)!) ? [202, 409] : []
          const drilled = ['GET', 'HEAD'].includes(method) && path.endsWith('/drill') ? [200] : []
          expect([what, [404, 400, canonical.get(method), ...started, ...drilled].includes(withToken.status)]).toEqual([what, true])
        }

        // A token in the URL is refused wherever the token is required, and never unlocks anything.
        if (!(isPublic && equivalent)) expectUnauthorized(queryToken, `${what}?access_token`)
      })

      // The canonical path itself: without the token, 401 on a token route whatever the method.
      for (const method of METHODS) {
        const anonymous = await request(method, path)
        if (isPublic) expect([`${method} ${path}`, anonymous.status]).toEqual([`${method} ${path}`, canonical.get(method)])
        else expectUnauthorized(anonymous, `${method} ${path}`)
      }
    }

    // Bounded, and not vacuous: every route got its spellings.
    expect(checked).toBeGreaterThan(paths.length * METHODS.length * 20 * 3)
  }, 300_000) // 13 routes × every spelling × 3 requests; drills started by POST spellings run meanwhile

  it('serves the canonical download with the token, and HEAD of it with the same headers and no body', async () => {
    const get = await request('GET', '/api/v1/backups/latest/download', {Authorization: `Bearer ${TOKEN}`})
    expect(get.status).toBe(200)
    expect(get.body.subarray(0, 2).toString('hex')).toBe('1f8b')
    const head = await request('HEAD', '/api/v1/backups/latest/download', {Authorization: `Bearer ${TOKEN}`})
    expect(head.status).toBe(200)
    expect(head.body.length).toBe(0)
    expect(head.headers['content-length']).toBe(String(get.body.length))
    expect(head.headers.etag).toBe(get.headers.etag)
  })

  it('serves one spelling of the fixed parts of a path: /API, /Api, BACKUPS, a trailing slash are 404 with the token', async () => {
    const targets = ['/API/v1/backups', '/Api/v1/backups', '/api/V1/backups', '/api/v1/BACKUPS', '/api/v1/backups/', '//api/v1/backups']
    targets.push('/api//v1/backups', '/%61pi/v1/backups', '/api/v1/%62ackups', '/api%2Fv1/backups', '/api/v1/./backups', '/HEALTH', '/health/')
    targets.push('/API/v1/backups/latest/download', '/Api/v1/backups/latest/download')
    for (const target of targets) {
      expect([target, (await request('GET', target, {Authorization: `Bearer ${TOKEN}`})).status]).toEqual([target, 404])
      expectUnauthorized(await request('GET', target), target)
    }
  })

  it('hides which paths exist from clients without the token: an unknown path is 401 like a real one', async () => {
    for (const target of ['/api/v1/nothing', '/api/v2/backups', '/API', '/admin', '/favicon.ico', '/api/v1/backups/jobs/sample/extra']) {
      expectUnauthorized(await request('GET', target), target)
      expect((await request('GET', target, {Authorization: `Bearer ${TOKEN}`})).status).toBe(404)
    }
  })
})
