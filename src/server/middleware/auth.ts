import {createHash, timingSafeEqual} from 'node:crypto'
import type {Middleware} from 'koa'
import {bearerToken} from 'koa-bearer-token'
import {RateLimiterMemory, RateLimiterRes} from 'rate-limiter-flexible'

import type {Logger} from '../../logger'

const CHALLENGE = 'Bearer realm="dbb"'

/**
 * How many wrong tokens one client address may send before it is locked out, and for how long.
 * A 16+ character token cannot be guessed at any rate; the limit keeps a scanner from trying at
 * line speed and makes the attempt visible in the log. While an address is locked out, even the
 * right token is answered 429, so a guess can never be confirmed during the lockout.
 */
export interface TokenGuessLimit {
  failures: number
  windowMs: number
}

export const TOKEN_GUESS_LIMIT: TokenGuessLimit = {failures: 20, windowMs: 60_000}

/**
 * `Authorization: Bearer <API_TOKEN>`. koa-bearer-token only extracts the token; the comparison is
 * here, in constant time over sha256 digests (equal lengths whatever the input, so neither the
 * content nor the length of the token leaks through timing). A token in the query string is
 * refused outright: URLs end up in proxy logs, browser history and shell history.
 *
 * Wrong tokens are counted per client address (the socket's, never X-Forwarded-For: the app does
 * not trust proxy headers, see app.ts). A missing token is not a guess and is not counted.
 */
export function requireApiToken(expected: string, options: {limit?: TokenGuessLimit; logger?: Logger} = {}): Middleware {
  const expectedDigest = digest(expected)
  const extract = bearerToken()
  const limit = options.limit ?? TOKEN_GUESS_LIMIT
  const windowSeconds = limit.windowMs / 1000
  const guesses = new RateLimiterMemory({points: limit.failures, duration: windowSeconds, blockDuration: windowSeconds})

  return async (ctx, next) => {
    const lockout = await guesses.get(ctx.ip)
    if (lockout !== null && lockout.consumedPoints > limit.failures) {
      const retryAfter = Math.max(1, Math.ceil(lockout.msBeforeNext / 1000))
      ctx.throw(429, `too many wrong API tokens from ${ctx.ip}: try again in ${retryAfter} s`, {
        headers: {'Retry-After': String(retryAfter), 'WWW-Authenticate': `${CHALLENGE}, error="invalid_token"`},
      })
    }

    if (ctx.query.access_token !== undefined) {
      ctx.throw(401, 'send the API token in the Authorization header (Authorization: Bearer <API_TOKEN>), not in the URL', {
        headers: {'WWW-Authenticate': `${CHALLENGE}, error="invalid_request"`},
      })
    }

    await extract(ctx, async () => {})
    const token = ctx.request.token ?? ''
    if (token === '') {
      ctx.throw(401, 'missing API token: send the header Authorization: Bearer <API_TOKEN>', {headers: {'WWW-Authenticate': CHALLENGE}})
    }

    if (!timingSafeEqual(digest(token), expectedDigest)) {
      await guesses.consume(ctx.ip).catch((rejection: unknown) => {
        // The limiter rejects (with its state) once the address is over the limit: from now on it is locked out.
        if (!(rejection instanceof RateLimiterRes)) throw rejection
        if (rejection.consumedPoints === limit.failures + 1) {
          options.logger?.warn(
            {event: 'http.auth_locked_out', client: ctx.ip, failures: limit.failures, lockoutSeconds: windowSeconds},
            'too many wrong API tokens from one address: locked out',
          )
        }
      })
      ctx.throw(401, 'invalid API token', {headers: {'WWW-Authenticate': `${CHALLENGE}, error="invalid_token"`}})
    }

    await next()
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}
