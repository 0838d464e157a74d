import {createHash, timingSafeEqual} from 'node:crypto'
import type {Middleware} from 'koa'
import {bearerToken} from 'koa-bearer-token'

const CHALLENGE = 'Bearer realm="dbb"'

/**
 * `Authorization: Bearer <API_TOKEN>`. koa-bearer-token only extracts the token; the comparison is
 * here, in constant time over sha256 digests (equal lengths whatever the input, so neither the
 * content nor the length of the token leaks through timing). A token in the query string is
 * refused outright: URLs end up in proxy logs, browser history and shell history.
 */
export function requireApiToken(expected: string): Middleware {
  const expectedDigest = digest(expected)
  const extract = bearerToken()
  return async (ctx, next) => {
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
      ctx.throw(401, 'invalid API token', {headers: {'WWW-Authenticate': `${CHALLENGE}, error="invalid_token"`}})
    }

    await next()
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}
