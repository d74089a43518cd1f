'use strict'
/**
 * `floodwall/express`: Express middleware over a floodwall `Engine`'s HTTP layer (for Express
 * 4 and 5, and any connect-style stack that gives `(req, res, next)`). It hands the engine the
 * request as received — method, target (`req.originalUrl`), the socket peer, the few headers
 * the engine reads — and writes the engine's answer: paths, client addresses behind trusted
 * proxies, public and skipped paths, allow and deny lists, the 401/403/429/503 responses and
 * every header value are the core's (the `[http]` section of the configuration), byte for byte
 * what every other floodwall middleware answers.
 *
 *     const { Engine } = require('floodwall')
 *     const { guard, proxy } = require('floodwall/express')
 *     const engine = Engine.fromFile('floodwall.toml')
 *     app.use(guard(engine))                       // token, lists and limits in one call
 *     app.use('/orders', proxy(engine, 'orders'))
 *
 * - `guard(engine, options)` verifies the token and applies every rule; `authenticate()` then
 *   `rateLimit()` do the same in two steps. A request the engine lets through reaches `next()`
 *   with `req.floodwall = { identity, decision }` (also `res.locals.floodwall`) and the
 *   rate-limit headers set on the response (the application's own header of the same name
 *   wins); one it refuses is answered here. A skipped path (`http.skip_paths`) reaches `next()`
 *   untouched.
 * - Options: `skip(req)` (true: untouched, like a skipped path) and, for the middlewares that
 *   limit, `cost(req)`: the request's cost in the rules' units (1 without it; a number that is
 *   no count is answered 400, as is anything that is not a number), and `maxWait`: how many
 *   milliseconds a request over its limit may wait for capacity instead of being answered 429
 *   (0, the default: answered at once). A 429 whose wait fits in what is left is asked again
 *   when the engine says capacity comes back (on a timer: the event loop keeps serving), and
 *   is not recorded; the attempt that is answered — admitted, or a 429 past the budget — is.
 *   A client that goes away while waiting is dropped. Rules decided before the token
 *   (`before_auth`) count every attempt.
 * - When the response finishes, the engine records it (once per request, whichever floodwall
 *   middlewares saw it) and settles the rules that count by response status or cost header.
 * - An exception of `skip` or `cost`, or a bad argument, goes to `next(err)`.
 * - On a Redis store the engine decides on its worker threads (the event loop keeps serving);
 *   on the memory store it decides on the calling thread.
 *
 * `proxy` is `floodwall/proxy`'s; `metrics(engine)` answers the engine's counters in the
 * Prometheus text format.
 */

const native = require('./native.js')
const { Engine, Decision, Identity, PROMETHEUS_CONTENT_TYPE, _convert } = require('./index.js')
const { proxy, requireEngine, optionsObject, optionalFunction, describe } = require('./proxy.js')

const GUARD = 0
const AUTHENTICATE = 1
const RATE_LIMIT = 2
/** Where the decision's row starts in a verdict's numbers (src/http.rs). */
const ROW = native.httpRow()
const OUT = new Float64Array(ROW + native.maxDecisionLen())
/** The headers a pass adds, by the index the engine gives (src/http.rs). */
const RATE_LIMIT_HEADERS = Object.freeze(['RateLimit-Policy', 'RateLimit', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset', 'Retry-After'])
const PROBLEM_CONTENT_TYPE = native.problemContentType()
/** Marks a request whose response an earlier floodwall middleware records. */
const RECORDED = Symbol.for('floodwall.responseRecorded')
/** Marks a request an `authenticate()` middleware saw. */
const AUTHENTICATED = Symbol.for('floodwall.authenticated')

/** The longest `maxWait`: a day, in ms. */
const MAX_WAIT_MS = 86_400_000

function settingsOf (fn, engine, options, stage) {
  requireEngine(fn, engine)
  const o = optionsObject(fn, options, stage === AUTHENTICATE ? ['skip'] : ['skip', 'cost', 'maxWait'])
  const maxWait = o.maxWait === undefined || o.maxWait === null ? 0 : o.maxWait
  if (typeof maxWait !== 'number' || !Number.isFinite(maxWait) || maxWait < 0 || maxWait > MAX_WAIT_MS) {
    throw new TypeError(`${fn}(): the maxWait option must be a number of milliseconds from 0 to ${MAX_WAIT_MS}, not ${describe(maxWait)}`)
  }
  if (stage !== RATE_LIMIT && !engine.hasAuth) {
    throw new TypeError(`${fn}(): the engine has no [auth] section, so it cannot verify bearer tokens (configure [auth], or use rateLimit() alone)`)
  }
  return {
    skip: optionalFunction(fn, o, 'skip', '(req) => boolean'),
    cost: optionalFunction(fn, o, 'cost', '(req) => number'),
    maxWait
  }
}

/** The request's values of the header names the engine reads, in their order. */
function headerValues (raw, http) {
  const { index, lengths } = http
  const values = new Array(http.names.length)
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]
    if (!lengths.has(name.length)) continue
    const at = index.get(name.toLowerCase())
    if (at === undefined) continue
    values[at] = values[at] === undefined ? raw[i + 1] : `${values[at]},${raw[i + 1]}`
  }
  return values
}

/** The response's values of the header names the engine reads once it is finished. */
function responseValues (res, names) {
  if (names.length === 0) return undefined
  return names.map((name) => {
    const value = res.getHeader(name)
    if (value === undefined) return undefined
    return Array.isArray(value) ? value.join(',') : String(value)
  })
}

/** Finishes the exchange once the response is, so that the engine records it. */
function watch (http, req, res, exchange, touchesStore) {
  const skipRecording = req[RECORDED] === true ? 1 : 0
  req[RECORDED] = true
  res.once('finish', () => {
    const finish = touchesStore ? http.finishAsync : http.finishSync
    finish(exchange, res.statusCode, skipRecording, responseValues(res, http.responseNames))
  })
}

function setState (req, res, state) {
  req.floodwall = state
  if (res.locals !== undefined && res.locals !== null) res.locals.floodwall = state
}

/**
 * Carries out a verdict: `meta` holds its numbers (src/http.rs), `answer` its strings from
 * `at` on.
 */
function conclude (engine, http, stage, req, res, next, meta, answer, at, authorization) {
  const verdict = meta[0]
  if (verdict === 0) {
    next()
    return
  }
  const n = meta[3]
  const touchesStore = (meta[2] & 2) !== 0
  if (verdict === 2) {
    res.statusCode = meta[1]
    for (let i = 0; i < n; i++) res.setHeader(answer[at + 2 + 2 * i], answer[at + 3 + 2 * i])
    watch(http, req, res, answer[at], touchesStore)
    res.end(answer[at + 1])
    return
  }
  const fields = answer[at + 1]
  let identity = fields === null ? null : new Identity(fields, engine, authorization)
  if (stage === RATE_LIMIT) {
    const state = req.floodwall
    identity = state !== undefined && state !== null ? state.identity : null
  }
  const decision = stage === AUTHENTICATE ? null : new Decision(meta, engine, ROW)
  if (stage === AUTHENTICATE) req[AUTHENTICATED] = true
  setState(req, res, { identity, decision })
  for (let i = 0; i < n; i++) res.setHeader(RATE_LIMIT_HEADERS[meta[4 + i]], answer[at + 2 + i])
  watch(http, req, res, answer[at], touchesStore)
  next()
}

function middleware (fn, engine, options, stage) {
  const settings = settingsOf(fn, engine, options, stage)
  return function floodwall (req, res, next) {
    let http, values, cost, subject, role, after
    try {
      if (settings.skip !== null && settings.skip(req)) {
        next()
        return
      }
      http = engine._http()
      values = headerValues(req.rawHeaders, http)
      cost = 1
      if (settings.cost !== null) {
        cost = settings.cost(req)
        if (typeof cost !== 'number') cost = NaN
      }
      subject = null
      role = null
      after = 0
      if (stage === RATE_LIMIT) {
        const state = req.floodwall
        const identity = state !== undefined && state !== null ? state.identity : null
        if (identity) {
          subject = identity.subject
          role = identity.role
        }
        if (req[AUTHENTICATED] === true) after = 1
      }
    } catch (error) {
      next(error)
      return
    }
    const authorization = values[http.index.get('authorization')]
    const target = req.originalUrl || req.url || '/'
    const peer = req.socket ? req.socket.remoteAddress : undefined
    const deadline = settings.maxWait > 0 ? performance.now() + settings.maxWait : 0
    const budget = () => deadline === 0 ? 0 : Math.max(0, deadline - performance.now())
    const waitOut = (ms) => {
      let timer = null
      const gone = () => clearTimeout(timer)
      res.once('close', gone)
      timer = setTimeout(() => {
        res.removeListener('close', gone)
        if (!res.destroyed && !res.writableEnded) attempt()
      }, Math.max(1, Math.ceil(ms)))
    }
    // A refusal the engine says can be waited out (`meta[4]` ms) is asked again then.
    const settle = (meta, answer, at) => {
      if (meta[0] === 2 && meta[4] >= 0) waitOut(meta[4])
      else conclude(engine, http, stage, req, res, next, meta, answer, at, authorization)
    }
    const attempt = () => {
      if (!engine.mayWait) {
        let answer
        try {
          answer = http.sync(OUT, req.method, target, peer, cost, stage, subject, role, after, values, budget())
        } catch (error) {
          next(_convert(error))
          return
        }
        // Outside the try: the application's errors are not the middleware's.
        settle(OUT, answer, 0)
        return
      }
      let pending
      try {
        pending = http.async(req.method, target, peer, cost, stage, subject, role, after, values, budget())
      } catch (error) {
        next(_convert(error))
        return
      }
      pending.then((answer) => settle(answer[0], answer, 1), (error) => next(_convert(error)))
    }
    attempt()
  }
}

/**
 * Verifies the token and applies every rule, in one engine call. Options: `skip`, `cost`,
 * `maxWait`.
 */
function guard (engine, options) {
  return middleware('guard', engine, options, GUARD)
}

/**
 * Verifies the token (and applies the rules decided before it, `before_auth`):
 * `req.floodwall = { identity, decision: null }`. Options: `skip`.
 */
function authenticate (engine, options) {
  return middleware('authenticate', engine, options, AUTHENTICATE)
}

/**
 * Applies the rules under the identity an earlier `authenticate()` put in `req.floodwall` (if
 * any), and fills in `decision`. Options: `skip`, `cost`, `maxWait`.
 */
function rateLimit (engine, options) {
  return middleware('rateLimit', engine, options, RATE_LIMIT)
}

/**
 * A handler answering `engine.prometheus()` — the engine's counters and its upstreams' state in
 * the Prometheus text format — with its content type and `Cache-Control: no-store`: mount it
 * as the scrape target (`app.get('/metrics', metrics(engine))`), outside the middlewares that
 * authenticate and limit. An error goes to `next(err)`.
 */
function metrics (engine) {
  requireEngine('metrics', engine)
  return function floodwallMetrics (req, res, next) {
    let text
    try {
      text = engine.prometheus()
    } catch (error) {
      next(error)
      return
    }
    // Written directly: `res.send`/`res.type` would rewrite the media type's parameters.
    res.writeHead(200, {
      'Content-Type': PROMETHEUS_CONTENT_TYPE,
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-store'
    })
    res.end(req.method === 'HEAD' ? undefined : text)
  }
}

module.exports = {
  authenticate,
  rateLimit,
  guard,
  proxy,
  metrics,
  PROBLEM_CONTENT_TYPE
}
