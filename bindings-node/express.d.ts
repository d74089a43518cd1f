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
 * Request paths: exact (`/health`) or a prefix ending in `*` (`/public/*`). Matched against
 * the whole percent-decoded path of `req.originalUrl`; a path with a `.` or `..` segment never
 * matches.
 */
export type PathPatterns = Iterable<string>

/** Options every middleware takes. */
export interface SkipOptions {
  /** Requests to let through untouched (no token verified, no limit checked) when it answers `true`. */
  skip?: (req: Request) => boolean
  /** Paths to let through untouched, such as health checks. */
  skipPaths?: PathPatterns
}

/** The options of `authenticate()`. */
export interface AuthenticateOptions extends SkipOptions {
  /** Paths that need no token (`identity` null); `guard()` still limits them, without a subject. */
  publicPaths?: PathPatterns
}

/** The options of `rateLimit()`. */
export interface RateLimitOptions extends SkipOptions {
  /**
   * The request's cost in the rules' units: an integer >= 0 (0 peeks); 1 when not given.
   * Mounted at the application's root, `req.path` is the whole path; under a prefix it is
   * relative to it (`req.originalUrl` is whole).
   */
  cost?: (req: Request) => number
  /**
   * The address `ip` rules are keyed on. By default `req.ip` in canonical form (it follows
   * Express's `trust proxy` setting), or the socket's peer when that is not an address.
   */
  keyIp?: (req: Request) => string | null | undefined
  /**
   * Which request headers the engine is given, for rules keyed on `header:NAME`: `true` (the
   * default) all, `false` none (when no rule is keyed on a header: the engine call costs about
   * half), or the names the rules use.
   */
  headers?: boolean | Iterable<string>
}

/** The options of `guard()`. */
export interface GuardOptions extends AuthenticateOptions, RateLimitOptions {}

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

/** The client address the middlewares key `ip` rules on by default; null when unknown. */
export declare function clientAddress (req: Request): string | null

/** The authentication error kinds (those answered 401). */
export type AuthErrorCode = Exclude<ErrorCode,
  | 'invalid_config' | 'cost_exceeds_limit' | 'no_upstream_available' | 'unknown_service'
  | 'unknown_upstream' | 'store_unavailable'>

/** The `detail` sentence of a 401's problem body, by error kind. */
export declare const AUTH_DETAILS: Readonly<Record<AuthErrorCode, string>>

/** `application/problem+json`. */
export declare const PROBLEM_CONTENT_TYPE: 'application/problem+json'

/** The body (RFC 9457) of every answer the middlewares and the proxy write themselves. */
export interface ProblemBody {
  type: 'about:blank'
  title: string
  status: 401 | 429 | 502 | 503 | 504
  detail: string
  /** An `ErrorCode`, `rate_limited`, `bad_gateway` or `upstream_timeout`. */
  code: ErrorCode | 'rate_limited' | 'bad_gateway' | 'upstream_timeout'
  /** With `rate_limited`: the deciding rule. */
  rule?: string | null
  /** With `rate_limited`, and `no_upstream_available` when known: when to retry (ms from now). */
  retry_after_ms?: number
}
