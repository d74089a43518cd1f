'use strict'
/**
 * `floodwall/express`: Express middleware around a floodwall `Engine` — bearer-token
 * authentication, layered rate limits, and a reverse proxy that load-balances over a
 * service's upstreams behind their circuit breakers. For Express 4 and 5 (and any
 * connect-style stack that gives `(req, res, next)`; tested with Express 5, and uses nothing
 * Express 4 lacks); depends on nothing but Node.
 *
 *     const express = require('express')
 *     const { Engine } = require('floodwall')
 *     const { guard, proxy } = require('floodwall/express')
 *
 *     const engine = Engine.fromFile('floodwall.toml')
 *     const app = express()
 *     app.set('trust proxy', 'loopback')          // only if a proxy on this host fronts the app
 *     app.use(guard(engine, { publicPaths: ['/public/*'], skipPaths: ['/health'] }))
 *     app.use('/orders', proxy(engine, 'orders'))
 *
 * The middlewares answer exactly as the Python binding's ASGI/WSGI middlewares do:
 *
 * - `guard(engine, options)` authenticates and rate-limits in one engine call
 *   (`authorize`). A request to a `skipPaths` path (or one `skip(req)` accepts) goes on as if
 *   the middleware were not there. A `publicPaths` request needs no token and is limited
 *   without a subject (by address, endpoint and header rules). Otherwise the token must be
 *   valid and every matching limit must admit the request. Then `req.floodwall` (and
 *   `res.locals.floodwall`) is `{ identity, decision }` — `identity` null when no token was
 *   verified — the decision's `RateLimit` headers are set on the response, and `next()` is
 *   called. The headers are set before the application runs, so a header of the same name
 *   that the application sets itself replaces them (the application's header wins).
 * - `authenticate(engine, options)` + `rateLimit(engine, options)` do the same in two steps
 *   (two engine calls) and give the same answers: `authenticate` sets
 *   `req.floodwall = { identity, decision: null }`; `rateLimit` keys its check on
 *   `req.floodwall.identity` (subject and role) when an earlier middleware set one, and fills
 *   in `decision`. Without an identity, rules keyed on `subject` see no subject: every such
 *   request shares one key.
 * - A refused token is answered `401` with `WWW-Authenticate` and a problem body (RFC 9457,
 *   `application/problem+json`) whose `code` is the error kind and whose `detail` is a fixed
 *   sentence per kind (`AUTH_DETAILS`: nothing of the token is ever sent back); a denied
 *   request `429` with every header of the decision (`Retry-After` among them) and `code`
 *   `rate_limited`; a request that costs more than a limit holds `429` with `code`
 *   `cost_exceeds_limit` and no `Retry-After` (it can never be admitted).
 * - Any other error — another `FloodwallError` (a configuration error, such as an engine whose
 *   `[auth]` was removed by `reloadAuth(null)`; `store_unavailable`), an exception of a
 *   `skip`, `cost` or `keyIp` callable, a `cost` that is not an integer ≥ 0 — goes to
 *   `next(err)`: Express's error handlers answer it.
 * - Every request a middleware does not skip is recorded once in the engine's monitoring
 *   (`engine.recordResponse`) when its response finishes (`res` emits `finish`): the status
 *   the client got — the `401`/`429` the middleware wrote, the application's answer, the
 *   error handler's `500`/`503` — and the time since the middleware started on the request,
 *   under the method and the path the engine saw. When several floodwall middlewares see a
 *   request, the first records it (it marks the request). A response that never finishes
 *   (the client went away first) is not recorded.
 *
 * What the engine is given: the method; the path of `req.originalUrl` (the whole path, even
 * where the middleware is mounted under a prefix; the query dropped; percent-decoded as
 * ASGI servers decode it), against which `publicPaths` and `skipPaths` are matched too; the
 * client address; the `cost` (1 unless the `cost` option answers otherwise); and the request
 * headers some rule is keyed on (`key = "header:…"`; `engine.keyHeaders`, usually none), by
 * lowercase name, a repeated header's values joined by commas. Handing over every header
 * roughly doubles the engine call's cost (measured: ~3 µs for `authorizeSync`, ~3.5 µs more
 * with 7 headers), hence that default; `headers: true` passes them all, `headers: false` none,
 * an array those named. The `Authorization` header is always read — two of them are one
 * malformed token.

 * The client address is `req.ip`, which follows Express's `trust proxy` setting: by default
 * it is the socket's peer, and `X-Forwarded-For` is ignored, so a caller cannot choose the
 * address it is limited by. Behind a reverse proxy, tell Express which proxies to believe —
 * `app.set('trust proxy', 'loopback')`, `app.set('trust proxy', ['10.0.0.0/8'])` or a hop
 * count — and `req.ip` becomes the address that proxy saw. This module never reads a
 * forwarding header itself. The address is canonicalised as the other bindings do it (an
 * IPv4-mapped IPv6 address is the IPv4 address, IPv6 in its RFC 5952 form, a port dropped);
 * if `req.ip` is not an address at all (a trusted proxy sent garbage), the socket's peer is
 * used. The `keyIp(req)` option replaces the whole rule.
 *
 * On a Redis store the engine's calls run on its worker threads (`authorize`/`check` return
 * Promises) and the event loop keeps serving; on the memory store the middleware decides on
 * the calling thread (`authorizeSync`/`checkSync`) with no Promise in between.
 *
 * `proxy(engine, service, options)` is a handler that forwards the request to an upstream of
 * `service`; see its documentation below. `metrics(engine)` is a handler answering the
 * engine's counters in the Prometheus text format (a scrape target).
 */

const http = require('node:http')
const https = require('node:https')
const net = require('node:net')
const { performance } = require('node:perf_hooks')

const { Engine, FloodwallError, PROMETHEUS_CONTENT_TYPE } = require('./index.js')

const PROBLEM_CONTENT_TYPE = 'application/problem+json'

/**
 * The `detail` of a 401's problem body by error kind: one fixed sentence each, so that
 * nothing of the token is ever sent back (the same sentences as the Python binding's).
 */
const AUTH_DETAILS = Object.freeze({
  missing_token: 'The request carries no bearer token in its Authorization header.',
  malformed_token: 'The bearer token is not a well-formed JWT.',
  token_too_large: 'The bearer token is larger than this server accepts.',
  algorithm_not_allowed: 'The bearer token is signed with an algorithm this server does not accept.',
  unknown_key: 'The bearer token names a signing key this server does not know.',
  bad_signature: "The bearer token's signature is not valid.",
  expired: 'The bearer token has expired.',
  not_yet_valid: 'The bearer token is not valid yet.',
  wrong_issuer: 'The bearer token comes from an issuer this server does not accept.',
  wrong_audience: 'The bearer token is meant for another audience.',
  missing_claim: 'The bearer token lacks a claim this server requires.',
  invalid_claim: 'A claim of the bearer token has a value this server does not accept.'
})
const AUTH_DETAIL_FALLBACK = 'The bearer token was refused.'

const DEFAULT_TIMEOUT_MS = 10_000
const MAX_TIMEOUT_MS = 2 ** 31 - 1

// ---------------------------------------------------------------------------------------
// Options

const describe = (value) => {
  if (value === null) return 'null'
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'object') return `an object (${(value.constructor && value.constructor.name) || 'Object'})`
  return `${typeof value} ${String(value)}`
}

function requireEngine (fn, engine) {
  if (!(engine instanceof Engine)) {
    throw new TypeError(`${fn}(): engine must be a floodwall Engine (Engine.fromFile, fromToml, fromJson or fromObject), not ${describe(engine)}`)
  }
}

function optionsObject (fn, options, known) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${fn}(): options must be an object, not ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`${fn}(): unknown option ${JSON.stringify(key)} (known: ${known.join(', ')})`)
    }
  }
  return options
}

function optionalFunction (fn, options, name, shape) {
  const value = options[name]
  if (value === undefined || value === null) return null
  if (typeof value !== 'function') {
    throw new TypeError(`${fn}(): the ${name} option must be a function ${shape}, not ${describe(value)}`)
  }
  return value
}

function optionalBoolean (fn, options, name, fallback) {
  const value = options[name]
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') {
    throw new TypeError(`${fn}(): the ${name} option must be true or false, not ${describe(value)}`)
  }
  return value
}

const DOT_SEGMENT = /(?:^|\/)\.{1,2}(?:\/|$)/

/**
 * Request paths given as exact paths (`/health`) or prefixes ending in `*` (`/public/*`
 * matches `/public/` and everything under it, not `/public`). A path with a `.` or `..`
 * segment never matches: what such a path reaches depends on who normalises it, so it is
 * never exempted from authentication or limits.
 */
class PathSet {
  constructor (fn, name, paths) {
    if (typeof paths === 'string' || paths === null || typeof paths !== 'object' || typeof paths[Symbol.iterator] !== 'function') {
      throw new TypeError(`${fn}(): the ${name} option must be an array of paths, not ${describe(paths)}`)
    }
    this.exact = new Set()
    this.prefixes = []
    for (const path of paths) {
      if (typeof path !== 'string') {
        throw new TypeError(`${fn}(): ${name} must hold strings, not ${describe(path)}`)
      }
      if (!path.startsWith('/')) {
        throw new TypeError(`${fn}(): ${name}: ${JSON.stringify(path)} must start with '/'`)
      }
      if (path.slice(0, -1).includes('*')) {
        throw new TypeError(`${fn}(): ${name}: ${JSON.stringify(path)} may hold '*' only as its last character`)
      }
      if (path.endsWith('*')) this.prefixes.push(path.slice(0, -1))
      else this.exact.add(path)
    }
  }

  get empty () {
    return this.exact.size === 0 && this.prefixes.length === 0
  }

  /** Whether `path` is one of the paths or under one of the prefixes. */
  matches (path) {
    if (!this.exact.has(path) && !this.prefixes.some((prefix) => path.startsWith(prefix))) return false
    return !DOT_SEGMENT.test(path)
  }
}

function pathSet (fn, options, name) {
  const value = options[name]
  if (value === undefined || value === null) return null
  const set = new PathSet(fn, name, value)
  return set.empty ? null : set
}

/**
 * The `headers` option: which request headers the engine is given, for rules keyed on
 * `header:NAME`. By default those the engine's rules are keyed on (`engine.keyHeaders`,
 * usually none); `true`: all of them; `false`: none; an array: those names. Answers null for
 * all, else the lowercase names (an empty Set for none).
 */
function headerNames (fn, value, engine) {
  if (value === undefined) return new Set(engine.keyHeaders)
  if (value === true) return null
  if (value === false) return new Set()
  if (typeof value === 'string' || value === null || typeof value !== 'object' || typeof value[Symbol.iterator] !== 'function') {
    throw new TypeError(`${fn}(): the headers option must be true, false or an array of header names, not ${describe(value)}`)
  }
  const names = new Set()
  for (const name of value) {
    if (typeof name !== 'string' || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) {
      throw new TypeError(`${fn}(): the headers option holds ${describe(name)}, not an HTTP header name`)
    }
    names.add(name.toLowerCase())
  }
  return names
}

/** The validated options of `authenticate`, `rateLimit` and `guard`. */
function middlewareSettings (fn, engine, options, { authenticates, limits }) {
  requireEngine(fn, engine)
  const known = ['skip', 'skipPaths']
  if (authenticates) known.push('publicPaths')
  if (limits) known.push('cost', 'keyIp', 'headers')
  const o = optionsObject(fn, options, known)
  const settings = {
    engine,
    skip: optionalFunction(fn, o, 'skip', '(req) => boolean'),
    skipPaths: pathSet(fn, o, 'skipPaths'),
    publicPaths: authenticates ? pathSet(fn, o, 'publicPaths') : null,
    cost: limits ? optionalFunction(fn, o, 'cost', '(req) => number') : null,
    keyIp: limits ? optionalFunction(fn, o, 'keyIp', '(req) => string | null') : null,
    headers: limits ? headerNames(fn, o.headers, engine) : null,
    // Working the address out (Express's `trust proxy` walk) is skipped when no rule keys on it.
    keysIp: engine.keysIp
  }
  if (authenticates && !engine.hasAuth) {
    throw new TypeError(`${fn}(): the engine has no [auth] section, so it cannot verify bearer tokens (configure [auth], or use rateLimit() alone)`)
  }
  return settings
}

// ---------------------------------------------------------------------------------------
// What a request is to the engine

/**
 * The path the engine and the path options see: the path of `req.originalUrl` (the whole
 * path, whatever prefix the middleware is mounted under), without its query, percent-decoded.
 */
function requestPath (req) {
  let url = req.originalUrl || req.url || '/'
  if (url.charCodeAt(0) !== 47) {
    // The absolute form (`GET http://host/path`): drop the scheme and authority.
    const origin = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(url)
    if (origin !== null) url = url.slice(origin[0].length)
    if (url.charCodeAt(0) !== 47) url = '/' + url
  }
  let end = url.indexOf('?')
  if (end < 0) end = url.length
  const hash = url.indexOf('#')
  if (hash >= 0 && hash < end) end = hash
  const raw = end === url.length ? url : url.slice(0, end)
  return raw.includes('%') ? percentDecode(raw) : raw
}

/**
 * Percent-decoding as ASGI servers decode a path (Python's `urllib.parse.unquote`): each
 * valid `%XX` is a byte, anything else stays as it is, and the bytes are read as UTF-8 with
 * U+FFFD for invalid sequences.
 */
function percentDecode (text) {
  try {
    return decodeURIComponent(text)
  } catch {}
  const bytes = []
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '%' && i + 2 < text.length && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      const code = text.codePointAt(i)
      if (code > 0xffff) i++
      for (const b of Buffer.from(String.fromCodePoint(code), 'utf8')) bytes.push(b)
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

/**
 * The request's headers by lowercase name — all of them, or only those of `names` (a Set of
 * lowercase names; see the `headers` option) — a repeated header's values joined by commas (as
 * the Python binding's servers join them; Node's `req.headers` keeps only the first of some).
 * A prototype-less object, so that no header name is special; undefined for no names.
 */
function requestHeaders (req, names = null) {
  if (names !== null && names.size === 0) return undefined
  const raw = req.rawHeaders
  const headers = Object.create(null)
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (names !== null && !names.has(name)) continue
    const previous = headers[name]
    headers[name] = previous === undefined ? raw[i + 1] : `${previous},${raw[i + 1]}`
  }
  return headers
}

/** One header's value (repeated ones joined by commas), or undefined. */
function headerValue (req, lowercaseName) {
  const raw = req.rawHeaders
  let value
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i].length === lowercaseName.length && raw[i].toLowerCase() === lowercaseName) {
      value = value === undefined ? raw[i + 1] : `${value},${raw[i + 1]}`
    }
  }
  return value
}

const MAPPED_DOTTED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i
const MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/

function canonicalIPv6 (text) {
  const dotted = MAPPED_DOTTED.exec(text)
  if (dotted !== null && net.isIPv4(dotted[1])) return dotted[1]
  let out
  try {
    out = new URL(`http://[${text}]/`).hostname.slice(1, -1)
  } catch {
    return text.toLowerCase() // a zone index (fe80::1%eth0): kept as written
  }
  const hex = MAPPED_HEX.exec(out)
  if (hex !== null) {
    const hi = parseInt(hex[1], 16)
    const lo = parseInt(hex[2], 16)
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  }
  return out
}

const isPort = (text) => /^:\d+$/.test(text)

/**
 * An address in canonical form, from an address optionally bracketed (IPv6), quoted and
 * followed by a port, as proxies write them; null when `text` is not one.
 */
function canonicalAddress (text) {
  if (typeof text !== 'string' || text === '') return null
  const kind = net.isIP(text)
  if (kind === 4) return text
  if (kind === 6) return canonicalIPv6(text)
  let node = text.trim()
  if (node.length >= 2 && node[0] === '"' && node[node.length - 1] === '"') node = node.slice(1, -1)
  if (node[0] === '[') {
    const end = node.indexOf(']')
    if (end < 0 || (end + 1 < node.length && !isPort(node.slice(end + 1)))) return null
    const inner = node.slice(1, end)
    return net.isIPv6(inner) ? canonicalIPv6(inner) : null
  }
  const colon = node.indexOf(':')
  if (colon >= 0 && node.indexOf(':', colon + 1) < 0) {
    const host = node.slice(0, colon)
    return isPort(node.slice(colon)) && net.isIPv4(host) ? host : null
  }
  return net.isIP(node) === 4 ? node : net.isIP(node) === 6 ? canonicalIPv6(node) : null
}

/**
 * The client address the engine keys `ip` rules on: `req.ip` (which follows Express's
 * `trust proxy` setting) in canonical form; the socket's peer when `req.ip` is not an
 * address; null when neither is known.
 */
function clientAddress (req) {
  const ip = canonicalAddress(req.ip)
  if (ip !== null) return ip
  const peer = req.socket ? req.socket.remoteAddress : undefined
  if (typeof peer !== 'string') return null
  const canonical = canonicalAddress(peer)
  return canonical === null ? peer : canonical
}

function costOf (settings, req) {
  if (settings.cost === null) return 1
  const cost = settings.cost(req)
  if (!Number.isSafeInteger(cost) || cost < 0) {
    throw new TypeError(`the cost option must answer an integer >= 0, not ${describe(cost)}`)
  }
  return cost
}

function ipOf (settings, req) {
  if (settings.keyIp === null) return settings.keysIp ? clientAddress(req) : undefined
  const ip = settings.keyIp(req)
  if (ip !== null && ip !== undefined && typeof ip !== 'string') {
    throw new TypeError(`the keyIp option must answer a string or null, not ${describe(ip)}`)
  }
  return ip
}

function skipped (settings, req, path) {
  if (settings.skipPaths !== null && settings.skipPaths.matches(path)) return true
  return settings.skip !== null && Boolean(settings.skip(req))
}

// ---------------------------------------------------------------------------------------
// The responses the middlewares write themselves

function problemBody (status, title, detail, code, extra) {
  return JSON.stringify({ type: 'about:blank', title, status, detail, code, ...extra })
}

function sendProblem (res, status, headers, body) {
  res.statusCode = status
  for (const name in headers) res.setHeader(name, headers[name])
  res.setHeader('Content-Type', PROBLEM_CONTENT_TYPE)
  res.setHeader('Content-Length', Buffer.byteLength(body))
  res.end(body)
}

function sendAuthProblem (res, error) {
  const detail = Object.prototype.hasOwnProperty.call(AUTH_DETAILS, error.code) ? AUTH_DETAILS[error.code] : AUTH_DETAIL_FALLBACK
  sendProblem(res, 401, { 'WWW-Authenticate': error.wwwAuthenticate },
    problemBody(401, 'Unauthorized', detail, error.code))
}

function sendRateLimited (res, decision) {
  const retryMs = decision.retryAfterMs
  const body = problemBody(429, 'Too Many Requests',
    `The rate limit is exhausted; retry in ${Math.ceil(retryMs / 1000)} s.`, 'rate_limited',
    { rule: decision.rule, retry_after_ms: retryMs })
  sendProblem(res, 429, decision.headers, body)
}

function sendCostProblem (res, code) {
  sendProblem(res, 429, {}, problemBody(429, 'Too Many Requests',
    'The request costs more than a rate limit allows; it can never be admitted.', code))
}

/** Answers an engine error the middleware answers itself; anything else goes to `next`. */
function refuse (error, res, next) {
  if (error instanceof FloodwallError) {
    if (error.status === 401 && typeof error.wwwAuthenticate === 'string') {
      sendAuthProblem(res, error)
      return
    }
    if (error.code === 'cost_exceeds_limit') {
      sendCostProblem(res, error.code)
      return
    }
  }
  next(error)
}

/** Marks a request whose response a floodwall middleware records (the first one to see it). */
const RECORDED = Symbol.for('floodwall.responseRecorded')

/**
 * Records the request's response in the engine's monitoring when it finishes — unless an
 * earlier floodwall middleware already does — with the time since `started`
 * (`performance.now()` when the middleware began).
 */
function recordResponse (engine, req, res, path, started) {
  if (req[RECORDED] === true) return
  req[RECORDED] = true
  const method = req.method
  res.on('finish', () => {
    try {
      engine.recordResponse(method, path, res.statusCode, performance.now() - started)
    } catch {
      // Node keeps statusCode within 100..999 and the method a string: nothing to refuse.
    }
  })
}

function setState (req, res, state) {
  req.floodwall = state
  if (res.locals !== undefined && res.locals !== null) res.locals.floodwall = state
}

/** Lets an admitted request through with its headers; answers a denied one. */
function admit (req, res, next, identity, decision) {
  if (!decision.allowed) {
    sendRateLimited(res, decision)
    return
  }
  setState(req, res, { identity, decision })
  if (decision.rule !== null) {
    const headers = decision.headers
    for (const name in headers) res.setHeader(name, headers[name])
  }
  next()
}

// ---------------------------------------------------------------------------------------
// The middlewares

/**
 * Verifies the request's bearer token (`engine.authenticate`, on the calling thread: token
 * verification never waits on the network) and sets `req.floodwall = { identity, decision:
 * null }`. Options: `skip`, `skipPaths`, `publicPaths` (no token needed; `identity` null).
 */
function authenticate (engine, options) {
  const settings = middlewareSettings('authenticate', engine, options, { authenticates: true, limits: false })
  return function floodwallAuthenticate (req, res, next) {
    const started = performance.now()
    let identity = null
    try {
      const path = requestPath(req)
      if (skipped(settings, req, path)) {
        next()
        return
      }
      recordResponse(engine, req, res, path, started)
      if (settings.publicPaths === null || !settings.publicPaths.matches(path)) {
        identity = engine.authenticate(headerValue(req, 'authorization') || '')
      }
    } catch (error) {
      refuse(error, res, next)
      return
    }
    setState(req, res, { identity, decision: null })
    next()
  }
}

/**
 * Applies the engine's limits (`engine.check`) under the identity an earlier middleware put
 * in `req.floodwall` (if any). Options: `skip`, `skipPaths`, `cost`, `keyIp`, `headers`.
 */
function rateLimit (engine, options) {
  const settings = middlewareSettings('rateLimit', engine, options, { authenticates: false, limits: true })
  return function floodwallRateLimit (req, res, next) {
    const started = performance.now()
    let request
    let identity = null
    let decision = null
    try {
      const path = requestPath(req)
      if (skipped(settings, req, path)) {
        next()
        return
      }
      recordResponse(engine, req, res, path, started)
      const state = req.floodwall
      if (state !== undefined && state !== null && state.identity) identity = state.identity
      request = {
        subject: identity !== null ? identity.subject : null,
        role: identity !== null ? identity.role : null,
        method: req.method,
        path,
        ip: ipOf(settings, req),
        cost: costOf(settings, req),
        headers: requestHeaders(req, settings.headers)
      }
      if (!engine.mayWait) decision = engine.checkSync(request)
    } catch (error) {
      refuse(error, res, next)
      return
    }
    // `admit` (and with it `next`) runs outside the try: the application's errors are not
    // the middleware's.
    if (decision !== null) {
      admit(req, res, next, identity, decision)
      return
    }
    engine.check(request).then(
      (decided) => admit(req, res, next, identity, decided),
      (error) => refuse(error, res, next))
  }
}

/**
 * Authenticates and rate-limits in one engine call (`authorize`: the hot path). Options:
 * `skip`, `skipPaths`, `publicPaths` (checked by address etc., without a token), `cost`,
 * `keyIp`, `headers`.
 */
function guard (engine, options) {
  const settings = middlewareSettings('guard', engine, options, { authenticates: true, limits: true })
  return function floodwallGuard (req, res, next) {
    const started = performance.now()
    let request
    let authorization = null
    let result = null
    try {
      const path = requestPath(req)
      if (skipped(settings, req, path)) {
        next()
        return
      }
      recordResponse(engine, req, res, path, started)
      const headers = requestHeaders(req, settings.headers)
      request = { method: req.method, path, ip: ipOf(settings, req), cost: costOf(settings, req), headers }
      if (settings.publicPaths === null || !settings.publicPaths.matches(path)) {
        authorization = (settings.headers === null ? headers.authorization : headerValue(req, 'authorization')) || ''
      }
      if (!engine.mayWait) {
        result = authorization === null
          ? { identity: null, decision: engine.checkSync(request) }
          : engine.authorizeSync(authorization, request)
      }
    } catch (error) {
      refuse(error, res, next)
      return
    }
    if (result !== null) {
      admit(req, res, next, result.identity, result.decision)
      return
    }
    const pending = authorization === null
      ? engine.check(request).then((decision) => ({ identity: null, decision }))
      : engine.authorize(authorization, request)
    pending.then(
      (authorized) => admit(req, res, next, authorized.identity, authorized.decision),
      (error) => refuse(error, res, next))
  }
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

// ---------------------------------------------------------------------------------------
// The proxy

/** Headers of one hop (RFC 9110 §7.6.1), never forwarded either way. (`Expect` is not
 * forwarded either: this server already answered any `100-continue`.) */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings'
])

function connectionTokens (value) {
  if (value === undefined) return null
  const tokens = new Set()
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase()
    if (name !== '') tokens.add(name)
  }
  return tokens
}

/** The upstream's URL, parsed once (by URL string). */
function parseTarget (url) {
  let parsed
  try {
    parsed = new URL(url)
  } catch {
    return null
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null
  const base = parsed.pathname.endsWith('/') ? parsed.pathname.slice(0, -1) : parsed.pathname
  return {
    https: parsed.protocol === 'https:',
    hostname: parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname,
    port: parsed.port === '' ? (parsed.protocol === 'https:' ? 443 : 80) : Number(parsed.port),
    host: parsed.host,
    base
  }
}

function hasBody (req) {
  const length = req.headers['content-length']
  if (length !== undefined) return length !== '0' && length.trim() !== '0'
  return req.headers['transfer-encoding'] !== undefined
}

/** The headers sent upstream: the request's, minus hop-by-hop ones, plus forwarding ones. */
function upstreamHeaders (req, target, settings) {
  const raw = req.rawHeaders
  const dropped = connectionTokens(headerValue(req, 'connection'))
  const headers = Object.create(null)
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (HOP_BY_HOP.has(name) || name === 'expect' || (dropped !== null && dropped.has(name))) continue
    if (name === 'host' && !settings.preserveHost) continue
    if (settings.xForwarded && (name === 'x-forwarded-for' || name === 'x-forwarded-proto' || name === 'x-forwarded-host')) continue
    const previous = headers[name]
    if (previous === undefined) headers[name] = raw[i + 1]
    else if (Array.isArray(previous)) previous.push(raw[i + 1])
    else headers[name] = [previous, raw[i + 1]]
  }
  if (!settings.preserveHost) headers.host = target.host
  if (settings.xForwarded) {
    const peer = req.socket ? req.socket.remoteAddress : undefined
    const prior = headerValue(req, 'x-forwarded-for')
    const peerText = typeof peer === 'string' ? (canonicalAddress(peer) || peer) : null
    if (peerText !== null) headers['x-forwarded-for'] = prior ? `${prior}, ${peerText}` : peerText
    else if (prior) headers['x-forwarded-for'] = prior
    const proto = typeof req.protocol === 'string' ? req.protocol : (req.socket && req.socket.encrypted ? 'https' : 'http')
    headers['x-forwarded-proto'] = proto
    const host = headerValue(req, 'host')
    if (host !== undefined) headers['x-forwarded-host'] = host
  }
  return headers
}

function sendGatewayProblem (res, status, code, detail, headers = {}, extra = undefined) {
  if (res.headersSent) {
    res.destroy()
    return
  }
  if (res.destroyed || res.writableEnded) return
  const title = status === 502 ? 'Bad Gateway' : status === 503 ? 'Service Unavailable' : 'Gateway Timeout'
  sendProblem(res, status, headers, problemBody(status, title, detail, code, extra))
}

function sendNoUpstream (res, error) {
  const headers = {}
  let extra
  if (typeof error.availableAtMs === 'number' && Number.isFinite(error.availableAtMs)) {
    const waitMs = Math.max(0, error.availableAtMs - Date.now())
    headers['Retry-After'] = String(Math.max(1, Math.ceil(waitMs / 1000)))
    extra = { retry_after_ms: Math.ceil(waitMs) }
  }
  sendGatewayProblem(res, 503, 'no_upstream_available',
    'No upstream of this service can take the request now.', headers, extra)
}

/**
 * A handler that forwards each request to an upstream of `service`, picked by the engine
 * (its strategy, behind each upstream's circuit breaker), and streams the answer back.
 *
 * - The request goes with its method, path and query — `options.path(req)` if given, else
 *   `req.originalUrl` (the whole path, whatever prefix the handler is mounted under) — after
 *   the upstream URL's own path; its headers minus the hop-by-hop ones (`Connection` and
 *   those it names, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Upgrade`, `Proxy-*`, …) and
 *   `Expect`; `Host` is the upstream's unless `preserveHost`. Unless `xForwarded` is false,
 *   `X-Forwarded-For` gets the socket's peer appended (the left entries are whatever the
 *   client or earlier proxies sent: an upstream must read it from the right),
 *   `X-Forwarded-Proto` is `req.protocol` (which follows `trust proxy`) and
 *   `X-Forwarded-Host` the request's `Host`; a `Forwarded` header passes through untouched.
 * - Bodies are streamed both ways, never buffered. Mount the proxy before any body parser:
 *   a request whose body was already read goes to `next(err)`.
 * - Connections are kept alive (an `http.Agent`/`https.Agent` with `keepAlive` per handler,
 *   or `options.agent` / `options.httpsAgent`). A request without a body that fails on a
 *   reused connection before any answer (the upstream closed it while idle) is sent once
 *   more, on the same lease.
 * - Every picked lease is finished exactly once: `failure` on a connection error, a 5xx
 *   answer, or an upstream that breaks off its body; `timeout` when no answer came within
 *   `timeoutMs` (default 10 s) of the pick, or its body stalled for `timeoutMs`; otherwise
 *   `success` once the body is through. The latency recorded is the time to the upstream's
 *   response headers (the time to the outcome when there were none). A client that goes away
 *   before the upstream answered ends the call, recorded as a `success` at the time it went:
 *   it says nothing against the upstream, and recording a failure would let clients open
 *   breakers (set `timeoutMs` below your clients' patience so that slow upstreams are
 *   judged).
 * - The answers it writes itself are problem bodies: `503` `no_upstream_available` when the
 *   engine has no upstream that may take a call (with `Retry-After` when a breaker will let
 *   calls through again, in whole seconds from now), `502` `bad_gateway` when the upstream
 *   could not be reached or broke off before answering, `504` `upstream_timeout`. Once the
 *   upstream's answer has begun, a failure destroys the client's connection. Nothing is
 *   retried on another upstream (a body cannot be sent twice). WebSocket upgrades are not
 *   proxied.
 */
function proxy (engine, service, options) {
  requireEngine('proxy', engine)
  if (typeof service !== 'string' || service === '') {
    throw new TypeError(`proxy(): service must be the name of a configured service, not ${describe(service)}`)
  }
  try {
    engine.upstreams(service)
  } catch (error) {
    if (error instanceof FloodwallError && error.code === 'unknown_service') {
      throw new TypeError(`proxy(): ${error.message}`)
    }
    throw error
  }
  const o = optionsObject('proxy', options, ['timeoutMs', 'agent', 'httpsAgent', 'path', 'preserveHost', 'xForwarded'])
  let timeoutMs = DEFAULT_TIMEOUT_MS
  if (o.timeoutMs !== undefined) {
    if (typeof o.timeoutMs !== 'number' || !Number.isFinite(o.timeoutMs)) {
      throw new TypeError(`proxy(): the timeoutMs option must be a number of milliseconds, not ${describe(o.timeoutMs)}`)
    }
    if (o.timeoutMs <= 0 || o.timeoutMs > MAX_TIMEOUT_MS) {
      throw new RangeError(`proxy(): the timeoutMs option must be over 0 and at most ${MAX_TIMEOUT_MS}, not ${o.timeoutMs}`)
    }
    timeoutMs = o.timeoutMs
  }
  if (o.agent !== undefined && !(o.agent instanceof http.Agent)) {
    throw new TypeError(`proxy(): the agent option must be an http.Agent, not ${describe(o.agent)}`)
  }
  if (o.httpsAgent !== undefined && !(o.httpsAgent instanceof https.Agent)) {
    throw new TypeError(`proxy(): the httpsAgent option must be an https.Agent, not ${describe(o.httpsAgent)}`)
  }
  const settings = {
    timeoutMs,
    path: optionalFunction('proxy', o, 'path', '(req) => string'),
    preserveHost: optionalBoolean('proxy', o, 'preserveHost', false),
    xForwarded: optionalBoolean('proxy', o, 'xForwarded', true)
  }
  let httpAgent = o.agent
  let httpsAgent = o.httpsAgent
  const agentFor = (target) => {
    if (target.https) return httpsAgent || (httpsAgent = new https.Agent({ keepAlive: true }))
    return httpAgent || (httpAgent = new http.Agent({ keepAlive: true }))
  }
  const targets = new Map()
  const targetOf = (url) => {
    let target = targets.get(url)
    if (target === undefined) {
      if (targets.size >= 1024) targets.clear()
      target = parseTarget(url)
      targets.set(url, target)
    }
    return target
  }

  return function floodwallProxy (req, res, next) {
    let forwardPath
    try {
      if (hasBody(req) && req.readableEnded) {
        throw new Error('proxy(): the request body was already read (by a body parser?): mount proxy() before any body parser')
      }
      forwardPath = settings.path === null ? (req.originalUrl || req.url) : settings.path(req)
      if (typeof forwardPath !== 'string' || !forwardPath.startsWith('/')) {
        throw new TypeError(`proxy(): the path to forward must be a string starting with '/', not ${describe(forwardPath)}`)
      }
    } catch (error) {
      next(error)
      return
    }
    let lease
    try {
      lease = engine.pick(service)
    } catch (error) {
      if (error instanceof FloodwallError && error.code === 'no_upstream_available') sendNoUpstream(res, error)
      else next(error)
      return
    }
    const target = targetOf(lease.url)
    if (target === null) {
      lease.finish('failure', 0)
      next(new Error(`proxy(): upstream ${JSON.stringify(lease.upstream)} of service ${JSON.stringify(service)} has URL ${JSON.stringify(lease.url)}, not an http: or https: URL`))
      return
    }
    forward(req, res, lease, target, forwardPath, settings, agentFor(target))
  }
}

/** Stops sending the request's body upstream and reads the rest of it to nothing, so that
 * the client's connection can carry its next request. */
function drain (req) {
  req.unpipe()
  req.resume()
}

/** One proxied call, from the pick to the finish of its lease. */
function forward (req, res, lease, target, forwardPath, settings, agent) {
  const started = performance.now()
  const elapsed = () => performance.now() - started
  const withBody = hasBody(req)
  const headers = upstreamHeaders(req, target, settings)
  const transport = target.https ? https : http
  let finished = false
  let upReq = null
  let upRes = null
  let responseMs = null
  let resent = false

  /** Records the call's outcome: the first one given counts, the others are ignored. */
  const finish = (outcome, latencyMs) => {
    if (finished) return
    finished = true
    if (!lease.finished) lease.finish(outcome, latencyMs)
  }

  // Until the response headers: the time the upstream has to answer. Then, refreshed by each
  // chunk, the time its body may stall (a 5xx body included).
  const timer = setTimeout(() => {
    finish('timeout', elapsed())
    if (upRes === null) {
      if (upReq !== null) upReq.destroy()
      drain(req)
      sendGatewayProblem(res, 504, 'upstream_timeout',
        `The upstream did not answer within ${Math.ceil(settings.timeoutMs / 1000)} s.`)
    } else {
      // The answer has begun: the client's connection goes with it.
      upRes.destroy()
      res.destroy()
    }
  }, settings.timeoutMs)

  const onUpstreamError = (error) => {
    if (upRes !== null || finished) return // the body's own failure (see its 'close'), or already judged
    if (!resent && !withBody && upReq.reusedSocket && error.code === 'ECONNRESET') {
      // The upstream closed a kept-alive connection as it was reused: nothing reached it.
      resent = true
      send()
      return
    }
    clearTimeout(timer)
    finish('failure', elapsed())
    drain(req)
    sendGatewayProblem(res, 502, 'bad_gateway', 'The upstream could not be reached or broke off before answering.')
  }

  const onResponse = (response) => {
    upRes = response
    responseMs = elapsed()
    response.on('error', () => {}) // an aborted body: judged on 'close'
    if (finished || res.destroyed) {
      clearTimeout(timer)
      response.destroy()
      return
    }
    const status = response.statusCode
    if (status >= 500) finish('failure', responseMs)
    timer.refresh()
    res.statusCode = status
    if (response.statusMessage) res.statusMessage = response.statusMessage
    const dropped = connectionTokens(response.headers.connection)
    const raw = response.rawHeaders
    const out = Object.create(null)
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i].toLowerCase()
      if (HOP_BY_HOP.has(name) || (dropped !== null && dropped.has(name))) continue
      const previous = out[name]
      if (previous === undefined) out[name] = [raw[i], raw[i + 1]]
      else previous.push(raw[i + 1])
    }
    for (const name in out) {
      const entry = out[name]
      res.setHeader(entry[0], entry.length === 2 ? entry[1] : entry.slice(1))
    }
    response.on('data', () => timer.refresh())
    response.once('end', () => finish('success', responseMs))
    response.once('close', () => {
      clearTimeout(timer)
      if (!response.complete) {
        finish('failure', elapsed())
        res.destroy()
      }
    })
    response.pipe(res)
  }

  const send = () => {
    upReq = transport.request({
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path: target.base + forwardPath,
      headers,
      agent,
      setHost: false
    })
    upReq.on('response', onResponse)
    upReq.on('error', onUpstreamError)
    if (withBody) {
      // A client that breaks off its upload closes `res`: judged there.
      if (req.listenerCount('error') === 0) req.on('error', () => {})
      req.pipe(upReq)
    } else {
      upReq.end()
    }
  }

  res.once('close', () => {
    clearTimeout(timer)
    if (res.writableFinished) return
    // The client went away before its answer was through: nothing against the upstream.
    finish('success', upRes === null ? elapsed() : responseMs)
    req.unpipe()
    if (upRes !== null) upRes.destroy()
    if (upReq !== null) upReq.destroy()
  })

  send()
}

module.exports = {
  authenticate,
  rateLimit,
  guard,
  proxy,
  metrics,
  clientAddress,
  AUTH_DETAILS,
  PROBLEM_CONTENT_TYPE
}
