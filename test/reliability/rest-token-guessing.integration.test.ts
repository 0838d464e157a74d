import http from 'node:http'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {TOKEN_GUESS_LIMIT} from '../../src/server/middleware/auth'
import {captureLogger, serveApp} from '../helpers/serve'

/**
 * Guessing the API token: an address that sends too many wrong tokens is locked out, and while it
 * is locked out even the right token is refused, so a guess cannot be confirmed. Requests go over
 * a real socket; the second client address (127.0.0.2) is a real second source on the loopback.
 */
const TOKEN = 'token-guessing-test-0123456789'
const WRONG = {Authorization: 'Bearer not-the-token-0123456789'}
const RIGHT = {Authorization: `Bearer ${TOKEN}`}

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

function request(port: number, route: string, headers: Record<string, string>, localAddress = '127.0.0.1'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request({host: '127.0.0.1', port, path: route, headers, localAddress, agent: false}, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8')}))
    })
    outgoing.on('error', reject)
    outgoing.end()
  })
}

describe('REST API: guessing the token', () => {
  let dir: string

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-token-guess-'))
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('locks an address out after too many wrong tokens, refuses even the right token during the lockout, and lets it in afterwards', async () => {
    const captured = captureLogger()
    const limit = {failures: 3, windowMs: 1000}
    const served = await serveApp(new LocalBackend(dir), {token: TOKEN, logger: captured.logger, tokenGuessLimit: limit})
    try {
      // `failures` wrong tokens, and one more: each is a plain 401.
      for (let attempt = 0; attempt <= limit.failures; attempt++) {
        expect((await request(served.port, '/api/v1/backups', WRONG)).status).toBe(401)
      }

      const locked = await request(served.port, '/api/v1/backups', RIGHT)
      expect(locked.status).toBe(429)
      expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1)
      expect(JSON.parse(locked.body)).toEqual({error: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many wrong API tokens from .*try again in \d+ s/)})
      // Unknown paths need the token too, so they are locked as well; public probes are not.
      expect((await request(served.port, '/api/v1/nothing-here', RIGHT)).status).toBe(429)
      expect((await request(served.port, '/health', {})).status).not.toBe(429)

      // Another address is not affected.
      expect((await request(served.port, '/api/v1/backups', RIGHT, '127.0.0.2')).status).toBe(200)

      const lockouts = captured.lines().filter((line) => line.event === 'http.auth_locked_out')
      expect(lockouts).toEqual([expect.objectContaining({client: '127.0.0.1', failures: limit.failures})])
      expect(captured.text()).not.toContain('not-the-token')
      expect(captured.text()).not.toContain(TOKEN)

      await new Promise((resolve) => setTimeout(resolve, limit.windowMs + 300))
      expect((await request(served.port, '/api/v1/backups', RIGHT)).status).toBe(200)
    } finally {
      await served.close()
    }
  })

  it('does not count requests without a token (they are not guesses)', async () => {
    const served = await serveApp(new LocalBackend(dir), {token: TOKEN, logger: captureLogger().logger, tokenGuessLimit: {failures: 2, windowMs: 60_000}})
    try {
      for (let attempt = 0; attempt < 10; attempt++) expect((await request(served.port, '/api/v1/backups', {})).status).toBe(401)
      expect((await request(served.port, '/api/v1/backups', RIGHT)).status).toBe(200)
    } finally {
      await served.close()
    }
  })

  it('applies the declared default limit when none is given', async () => {
    const served = await serveApp(new LocalBackend(dir), {token: TOKEN, logger: captureLogger().logger})
    try {
      for (let attempt = 0; attempt <= TOKEN_GUESS_LIMIT.failures; attempt++) {
        expect((await request(served.port, '/api/v1/backups', WRONG)).status).toBe(401)
      }

      const locked = await request(served.port, '/api/v1/backups', RIGHT)
      expect(locked.status).toBe(429)
      expect(Number(locked.headers['retry-after'])).toBeLessThanOrEqual(TOKEN_GUESS_LIMIT.windowMs / 1000)
    } finally {
      await served.close()
    }
  })
})
