import {types} from 'node:util'
import type {Middleware} from 'koa'

import {printableExcerpt} from '../../format'
import type {Logger} from '../../logger'
import {redactSecrets} from '../../secrets'

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
  429: 'TOO_MANY_REQUESTS',
  503: 'SERVICE_UNAVAILABLE',
}

/**
 * dbb's domain errors (src/errors.ts) by code: the status, and whether a 5xx message is meant for
 * clients. A storage outage says what the backend reported (secret-free by the storage contract):
 * the client is told the truth (503, try later), not a masked 500.
 */
/**
 * Every 503 tells clients when to try again (RFC 9110 §10.2.3): a storage outage or an unreadable
 * sidecar may pass; a handler that knows better sets its own Retry-After.
 */
const RETRY_AFTER_UNAVAILABLE_SECONDS = 30

const STATUS_BY_CODE: Record<string, {status: number; expose?: boolean}> = {
  NOT_FOUND: {status: 404},
  USAGE: {status: 400},
  STORAGE_UNAVAILABLE: {status: 503, expose: true},
  // A backup whose sidecar could not be read may read on a retry; a damaged one will not.
  BACKUP_UNREADABLE: {status: 503, expose: true},
  BACKUP_DAMAGED: {status: 500, expose: true},
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
 * (STATUS_BY_CODE). Checks use `types.isNativeError`, which holds across realms
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
      const masked = status >= 500 && error.expose !== true && !exposedByCode(error)
      if (masked) {
        logger.error({event: 'http.error', method: ctx.method, path: ctx.path, status, error: error.message}, 'request failed')
      } else if (exposedByCode(error)) {
        logger.warn({event: 'http.unavailable', method: ctx.method, path: ctx.path, status, error: error.message}, 'request failed')
      }

      ctx.status = status
      if (error.headers) ctx.set(error.headers)
      if (status === 503 && !ctx.response.get('Retry-After')) ctx.set('Retry-After', String(RETRY_AFTER_UNAVAILABLE_SECONDS))
      ctx.body = {
        error: masked ? (CODES[status] ?? 'INTERNAL_ERROR') : codeOf(error, status),
        message: masked ? 'internal error (details are in the server log)' : redactSecrets(error.message),
      } satisfies ErrorBody
      return
    }

    // Nothing answered: an unknown route (404) or a known route with another method (405).
    if (ctx.body === undefined && ctx.status >= 400) {
      const {status} = ctx
      const path = printableExcerpt(ctx.path)
      const message =
        status === 404
          ? `no such endpoint: ${ctx.method} ${path} (paths are case-sensitive, without a trailing slash)`
          : `${ctx.method} is not allowed on ${path}`
      ctx.body = {error: CODES[status] ?? 'ERROR', message} satisfies ErrorBody
      ctx.status = status // assigning a body would otherwise turn the 404 into a 200
    }
  }
}

function statusOf(error: HttpErrorShape): number {
  const status = error.status ?? error.statusCode
  if (typeof status === 'number' && status >= 400 && status <= 599) return status
  return mappingOf(error)?.status ?? 500
}

function exposedByCode(error: HttpErrorShape): boolean {
  return mappingOf(error)?.expose === true
}

function mappingOf(error: HttpErrorShape): {status: number; expose?: boolean} | undefined {
  return typeof error.code === 'string' && Object.hasOwn(STATUS_BY_CODE, error.code) ? STATUS_BY_CODE[error.code] : undefined
}

function codeOf(error: HttpErrorShape, status: number): string {
  // dbb's USAGE is a 400 to HTTP clients; other stable codes (NOT_FOUND, INVALID_BACKUP_ID …) pass through.
  if (error.code === 'USAGE') return 'BAD_REQUEST'
  if (typeof error.code === 'string' && /^[A-Z][A-Z_]+$/.test(error.code)) return error.code
  return CODES[status] ?? 'ERROR'
}
