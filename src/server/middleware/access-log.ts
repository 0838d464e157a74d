import type {Middleware} from 'koa'

import type {Logger} from '../../logger'

/**
 * One line per request, written when the response is over (so a streamed download is logged with
 * its real duration and whether the client stayed to the end). Only the path is logged, never the
 * query string or headers: a token sent as `?access_token=` or in `Authorization` stays out of logs.
 */
export function accessLog(logger: Logger): Middleware {
  return async (ctx, next) => {
    const started = process.hrtime.bigint()
    ctx.res.once('close', () => {
      logger.info(
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
