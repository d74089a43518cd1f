/**
 * `floodwall/express`: Express middleware around a floodwall `Engine` — bearer-token
 * authentication, layered rate limits, and a reverse proxy over a service's upstreams — and a
 * Prometheus scrape handler. See express.js for what each answers. `authenticate`,
 * `rateLimit` and `guard` record every response they see in the engine's monitoring, once per
 * request.
 */

import type { Request, RequestHandler } from 'express'
import type { Agent as HttpAgent } from 'node:http'
import type { Agent as HttpsAgent } from 'node:https'
import type { Decision, Engine, ErrorCode, Identity } from './index'

/** What the middlewares hand the application, as `req.floodwall` and `res.locals.floodwall`. */
export interface FloodwallState {
  /** The verified caller; null on a public path (or when no middleware verified a token). */
  identity: Identity | null
  /** The rate-limit decision; null after `authenticate()` alone, until `rateLimit()` ran. */
  decision: Decision | null
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by `floodwall/express` before it lets a request through. */
      floodwall?: FloodwallState
    }
    interface Locals {
      /** The same object as `req.floodwall`. */
      floodwall?: FloodwallState
    }
  }
}

/**
 * Options every middleware takes. Public and skipped paths, trusted proxies, allow and deny
 * lists are the engine's: the configuration's `[http]` section.
 */
export interface SkipOptions {
  /** Requests to let through untouched (no token verified, no limit checked) when it answers `true`. */
  skip?: (req: Request) => boolean
}

/** The options of `authenticate()`. */
export type AuthenticateOptions = SkipOptions

/** The options of `rateLimit()`. */
export interface RateLimitOptions extends SkipOptions {
  /**
   * The request's cost in the rules' units (1 when not given). An answer that is not an
   * integer from 0 to 2^53 is answered 400 `invalid_cost`.
   */
  cost?: (req: Request) => number
  /**
   * Milliseconds a request over its limit may wait for capacity instead of being answered 429
   * (0, the default: answered at once; at most a day). It is asked again, on a timer, when
   * the engine says capacity comes back; only the attempt that is answered is recorded.
   */
  maxWait?: number
}

/** The options of `guard()`. */
export type GuardOptions = RateLimitOptions

/** The options of `proxy()`. */
export interface ProxyOptions {
  /**
   * Milliseconds the upstream has, from the pick, to send its response headers (then, between
   * chunks of its body); default 10 000. Past it: `504` and the lease finished as `timeout`.
   */
  timeoutMs?: number
  /** The agent for `http:` upstreams; default, a keep-alive agent per handler. */
  agent?: HttpAgent
  /** The agent for `https:` upstreams; default, a keep-alive agent per handler. */
  httpsAgent?: HttpsAgent
  /** The path and query to request, appended to the upstream URL's path; default `req.originalUrl`. */
  path?: (req: Request) => string
  /** Send the request's `Host` rather than the upstream's; default false. */
  preserveHost?: boolean
  /** Write `X-Forwarded-For` (appended), `-Proto` and `-Host`; default true. */
  xForwarded?: boolean
  /**
   * Send the caller a floodwall middleware verified upstream as `X-Floodwall-Subject` and
   * `X-Floodwall-Role` (never the caller's own headers of those names); default false.
   */
  identityHeaders?: boolean
}

/** Verifies the bearer token; sets `req.floodwall = { identity, decision: null }`. */
export declare function authenticate (engine: Engine, options?: AuthenticateOptions): RequestHandler

/** Applies the limits, under `req.floodwall.identity` when an earlier middleware set one. */
export declare function rateLimit (engine: Engine, options?: RateLimitOptions): RequestHandler

/** Authenticates and rate-limits in one engine call; sets `req.floodwall = { identity, decision }`. */
export declare function guard (engine: Engine, options?: GuardOptions): RequestHandler

/** A handler that forwards requests to an upstream of `service` and streams the answer back. */
export declare function proxy (engine: Engine, service: string, options?: ProxyOptions): RequestHandler

/**
 * A handler answering `engine.prometheus()` with the Prometheus content type (a scrape target:
 * `app.get('/metrics', metrics(engine))`).
 */
export declare function metrics (engine: Engine): RequestHandler

/** `application/problem+json`. */
export declare const PROBLEM_CONTENT_TYPE: 'application/problem+json'

/** The body (RFC 9457) of every answer the middlewares and the proxy write themselves. */
export interface ProblemBody {
  type: 'about:blank'
  title: string
  status: 400 | 401 | 403 | 429 | 502 | 503 | 504
  detail: string
  /** An `ErrorCode`, `rate_limited`, `access_denied`, `bad_gateway` or `upstream_timeout`. */
  code: ErrorCode | 'rate_limited' | 'access_denied' | 'bad_gateway' | 'upstream_timeout'
  /** With `rate_limited`: the deciding rule. */
  rule?: string | null
  /** With `rate_limited`, `store_unavailable`, and `no_upstream_available` when known: when to retry (whole seconds from now, as `Retry-After`). */
  retry_after?: number
}
