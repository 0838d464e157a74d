import type {Middleware} from 'koa'

import type {Logger} from '../../logger'
import type {RouterState} from '../routes/route'

/**
 * One line per request, written when the response is over (so a streamed download is logged with
 * its real duration and whether the client stayed to the end). Only the path is logged, never the
 * query string or headers: a token sent as `?access_token=` or in `Authorization` stays out of logs.
 * Probes (/health, /metrics: a healthcheck every 30 s is 2,880 lines a day) are logged at debug
 * unless they fail with a 5xx, which is worth seeing.
 */
export function accessLog(logger: Logger): Middleware {
  return async (ctx, next) => {
    const started = process.hrtime.bigint()
    ctx.res.once('close', () => {
      const level = (ctx.state as RouterState).probe && ctx.status < 500 ? 'debug' : 'info'
      logger[level](
        {
          event: 'http.request',
          method: ctx.method,
          path: ctx.path,
          status: ctx.status,
          durationMs: Number((process.hrtime.bigint() - started) / 1_000_000n),
          bytes: ctx.response.length ?? null,
          completed: ctx.res.writableFinished,
        },
        `${ctx.method} ${ctx.path} ${ctx.status}`,
      )
    })
    await next()
  }
}
