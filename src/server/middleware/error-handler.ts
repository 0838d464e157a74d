import {types} from 'node:util'
import type {Middleware} from 'koa'

import type {Logger} from '../../logger'

/** The one shape of every error response. */
export interface ErrorBody {
  error: string
  message: string
}

const CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  409: 'CONFLICT',
  416: 'RANGE_NOT_SATISFIABLE',
  503: 'SERVICE_UNAVAILABLE',
}

interface HttpErrorShape {
  status?: number
  statusCode?: number
  expose?: boolean
  code?: unknown
  headers?: Record<string, string>
  message: string
}

/**
 * First in the chain: every error below becomes `{error, message}` with the right status. Client
 * errors (4xx) show their message; server errors are logged in full and answered with a generic
 * message, since their text may name internals. dbb's own errors map by their `code`
 * (NOT_FOUND → 404, USAGE → 400). Checks use `types.isNativeError`, which holds across realms
 * (jest's module sandbox) where `instanceof Error` does not.
 */
export function errorHandler(logger: Logger): Middleware {
  return async (ctx, next) => {
    try {
      await next()
    } catch (thrown) {
      const error: HttpErrorShape = types.isNativeError(thrown) ? (thrown as HttpErrorShape) : {message: String(thrown)}
      const status = statusOf(error)
      // 5xx texts may name internals; one thrown with `expose: true` (e.g. 503 shutting down) is meant for clients.
      const masked = status >= 500 && error.expose !== true
      if (masked) {
        logger.error({event: 'http.error', method: ctx.method, path: ctx.path, status, error: error.message}, 'request failed')
      }

      ctx.status = status
      if (error.headers) ctx.set(error.headers)
      ctx.body = {
        error: masked ? (CODES[status] ?? 'INTERNAL_ERROR') : codeOf(error, status),
        message: masked ? 'internal error (details are in the server log)' : error.message,
      } satisfies ErrorBody
      return
    }

    // Nothing answered: an unknown route (404) or a known route with another method (405).
    if (ctx.body === undefined && ctx.status >= 400) {
      const {status} = ctx
      const message = status === 404 ? `no such endpoint: ${ctx.method} ${ctx.path}` : `${ctx.method} is not allowed on ${ctx.path}`
      ctx.body = {error: CODES[status] ?? 'ERROR', message} satisfies ErrorBody
      ctx.status = status // assigning a body would otherwise turn the 404 into a 200
    }
  }
}

function statusOf(error: HttpErrorShape): number {
  const status = error.status ?? error.statusCode
  if (typeof status === 'number' && status >= 400 && status <= 599) return status
  if (error.code === 'NOT_FOUND') return 404
  if (error.code === 'USAGE') return 400
  // A backup whose sidecar could not be read may read on a retry; a damaged one will not.
  if (error.code === 'BACKUP_UNREADABLE') return 503
  return 500
}

function codeOf(error: HttpErrorShape, status: number): string {
  // dbb's USAGE is a 400 to HTTP clients; other stable codes (NOT_FOUND, INVALID_BACKUP_ID …) pass through.
  if (error.code === 'USAGE') return 'BAD_REQUEST'
  if (typeof error.code === 'string' && /^[A-Z][A-Z_]+$/.test(error.code)) return error.code
  return CODES[status] ?? 'ERROR'
}
