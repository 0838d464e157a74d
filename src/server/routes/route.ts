import Router, {type RouterMiddleware} from '@koa/router'
import type {Middleware} from 'koa'

/** Who may call a route. Every route declares it: there is no default, so none exists without deciding. */
export type RouteAuth = 'token' | 'public'

/** One HTTP route, declared once; the router, its auth and the tests that attack it derive from this. */
export interface Route {
  method: 'GET' | 'POST'
  /** The one spelling that is served: matched case-sensitively, without a trailing slash, undecoded. */
  path: string
  auth: RouteAuth
  /** Polled by probes (health checks, Prometheus) every few seconds: logged at debug, not info. */
  probe?: boolean
  handler: RouterMiddleware
}

export interface RouterState {
  /** Set on requests to a `probe` route (read by the access log). */
  probe?: boolean
}

/**
 * The router that serves `routes`, each behind the API-token check when it declares `auth: 'token'`.
 * It is case-sensitive and strict about trailing slashes: @koa/router's defaults would also serve
 * `/API/v1/…` and `/api/v1/…/`, which a reverse proxy's rules for `/api/` (an IP allowlist, rate
 * limits) would not cover. A `GET` route also answers `HEAD`, with the same auth.
 */
export function routerFor(routes: readonly Route[], authenticate: Middleware): Router {
  const router = new Router({sensitive: true, strict: true})
  for (const route of routes) {
    const chain: RouterMiddleware[] = []
    if (route.probe) chain.push(markProbe as RouterMiddleware)
    if (route.auth === 'token') chain.push(authenticate as RouterMiddleware)
    chain.push(route.handler)
    router.register(route.path, [route.method], chain)
  }

  return router
}

/**
 * After the router, for requests no route served: only a public route's path (asked with another
 * method) answers without the token; everything else, under any spelling, needs the token before it
 * learns 404 or 405. So an unauthenticated client cannot probe which paths exist.
 */
export function denyUnmatchedWithoutToken(routes: readonly Route[], authenticate: Middleware): Middleware {
  const publicPaths = new Set(routes.filter((route) => route.auth === 'public').map((route) => route.path))
  return async (ctx, next) => {
    const matched = (ctx as {matched?: {path: string}[]}).matched ?? []
    if (matched.some((layer) => publicPaths.has(layer.path))) return next()
    return authenticate(ctx, next)
  }
}

const markProbe: Middleware<RouterState> = async (ctx, next) => {
  ctx.state.probe = true
  await next()
}
