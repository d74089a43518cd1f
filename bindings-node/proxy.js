'use strict'
/**
 * `floodwall/proxy` (also exported by `floodwall/express`): a reverse proxy that forwards a
 * request to an upstream of a service, picked by the engine behind each upstream's circuit
 * breaker, and streams the answer back. See `proxy()` below for what it guarantees; the
 * answers it gives itself (502, 503, 504) are the core's, as every floodwall answer is.
 */

const http = require('node:http')
const https = require('node:https')
const { performance } = require('node:perf_hooks')

const native = require('./native.js')
const { Engine, FloodwallError } = require('./index.js')

const DEFAULT_TIMEOUT_MS = 10_000
const MAX_TIMEOUT_MS = 2 ** 31 - 1
/** The request headers that carry the verified caller upstream (`identityHeaders`). */
const SUBJECT_HEADER = 'x-floodwall-subject'
const ROLE_HEADER = 'x-floodwall-role'

const describe = (value) => {
  if (value === null) return 'null'
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'object') return `an object (${(value.constructor && value.constructor.name) || 'Object'})`
  return `${typeof value} ${String(value)}`
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

/** Writes one of the core's own answers (`native.gatewayAnswer`). */
function sendAnswer (res, answer) {
  if (res.headersSent) {
    res.destroy()
    return
  }
  if (res.destroyed || res.writableEnded) return
  res.statusCode = Number(answer[0])
  for (let i = 2; i + 1 < answer.length; i += 2) res.setHeader(answer[i], answer[i + 1])
  res.end(answer[1])
}

function requireEngine (fn, engine) {
  if (!(engine instanceof Engine)) {
    throw new TypeError(`${fn}(): engine must be a floodwall Engine (Engine.fromFile, fromToml, fromJson or fromObject), not ${describe(engine)}`)
  }
}

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
    // The caller's identity comes from the token the gateway verified, never from the caller.
    if (settings.identityHeaders && (name === SUBJECT_HEADER || name === ROLE_HEADER)) continue
    if (settings.xForwarded && (name === 'x-forwarded-for' || name === 'x-forwarded-proto' || name === 'x-forwarded-host')) continue
    const previous = headers[name]
    if (previous === undefined) headers[name] = raw[i + 1]
    else if (Array.isArray(previous)) previous.push(raw[i + 1])
    else headers[name] = [previous, raw[i + 1]]
  }
  if (!settings.preserveHost) headers.host = target.host
  if (settings.identityHeaders) {
    const state = req.floodwall
    const identity = state !== undefined && state !== null ? state.identity : null
    if (identity) {
      headers[SUBJECT_HEADER] = identity.subject
      if (identity.role !== null) headers[ROLE_HEADER] = identity.role
    }
  }
  if (settings.xForwarded) {
    const peer = req.socket ? req.socket.remoteAddress : undefined
    const prior = headerValue(req, 'x-forwarded-for')
    if (typeof peer === 'string') headers['x-forwarded-for'] = prior ? `${prior}, ${peer}` : peer
    else if (prior) headers['x-forwarded-for'] = prior
    const proto = typeof req.protocol === 'string' ? req.protocol : (req.socket && req.socket.encrypted ? 'https' : 'http')
    headers['x-forwarded-proto'] = proto
    const host = headerValue(req, 'host')
    if (host !== undefined) headers['x-forwarded-host'] = host
  }
  return headers
}

function sendNoUpstream (res, error) {
  const at = typeof error.availableAtMs === 'number' && Number.isFinite(error.availableAtMs) ? error.availableAtMs : undefined
  sendAnswer(res, native.gatewayAnswer('no_upstream_available', at))
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
 *   With `identityHeaders`, the caller a floodwall middleware verified goes upstream as
 *   `X-Floodwall-Subject` and `X-Floodwall-Role` (and the caller's own headers of those names
 *   never do).
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
  const o = optionsObject('proxy', options, ['timeoutMs', 'agent', 'httpsAgent', 'path', 'preserveHost', 'xForwarded', 'identityHeaders'])
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
    xForwarded: optionalBoolean('proxy', o, 'xForwarded', true),
    identityHeaders: optionalBoolean('proxy', o, 'identityHeaders', false)
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
      sendAnswer(res, native.gatewayAnswer('upstream_timeout', settings.timeoutMs))
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
    sendAnswer(res, native.gatewayAnswer('bad_gateway'))
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

module.exports = { proxy, requireEngine, optionsObject, optionalFunction, describe }
