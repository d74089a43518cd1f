'use strict'
/**
 * Real HTTP for the `floodwall/express` tests: servers on 127.0.0.1 and a free port (closed,
 * their connections with them, when a test ends), a client that sends exactly the request it
 * is given (raw path, repeated headers) on a fresh connection, upstream servers that count
 * their calls for the proxy tests, the Express application the middleware tests serve, and
 * the configurations and assertions they share (the Python binding's middleware tests, in
 * `bindings-python/tests/http_servers.py`, are the model).
 */

const http = require('node:http')
const crypto = require('node:crypto')
const assert = require('node:assert/strict')
const express = require('express')

const { floodwall, hs256Auth } = require('./helpers.js')

const HOST = '127.0.0.1'
/** How long one request of the client may take before it fails (a bound, not an assertion). */
const REQUEST_TIMEOUT_MS = 10_000

const USER_LIMIT = 3
const PREMIUM_LIMIT = 5
const PUBLIC_IP_LIMIT = 2

/**
 * Per-subject limits under `/api` (3 an hour, 5 for premium) and per-address limits under
 * `/public` (2 an hour): exact sliding logs over an hour, so no window boundary falls inside a
 * test. `extra` rules are appended.
 */
function rules (extra = []) {
  return [
    {
      name: 'per-user',
      match: { paths: ['/api/**'] },
      key: 'subject',
      algorithm: 'sliding_window',
      limit: USER_LIMIT,
      window: '1h',
      roles: { premium: { limit: PREMIUM_LIMIT } }
    },
    {
      name: 'per-ip',
      match: { paths: ['/public/**'] },
      key: 'ip',
      algorithm: 'sliding_window',
      limit: PUBLIC_IP_LIMIT,
      window: '1h'
    },
    ...extra
  ]
}

/** The tests' configuration, on the memory store unless `store` is given. */
function config ({ store, auth = true, extraRules = [], services, http } = {}) {
  const result = { rules: rules(extraRules) }
  if (auth) result.auth = hs256Auth(undefined, { default_role: 'free' })
  if (store) result.store = store
  if (services) result.services = services
  if (http) result.http = http
  return result
}

const engineOf = (options) => floodwall.Engine.fromObject(config(options))

/** A server for `handler` on a free port: `{ port, server, close() }`. */
function listen (handler) {
  return new Promise((resolve, reject) => {
    const server = http.createServer(handler)
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      resolve({
        port,
        server,
        close: () => new Promise((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        })
      })
    })
  })
}

/**
 * Sends one request to `port` on a fresh connection and reads the whole answer:
 * `{ status, headers, rawHeaders, text, json() }`. `headers` is an object or an array of
 * `[name, value]` pairs (repeats kept); `path` is sent as it is; `body` a string, Buffer or
 * an array of chunks (sent chunked).
 */
function request (port, { method = 'GET', path = '/', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers)
    const flat = []
    if (!pairs.some(([name]) => name.toLowerCase() === 'host')) flat.push('Host', `${HOST}:${port}`)
    for (const [name, value] of pairs) flat.push(name, value)
    const req = http.request({ host: HOST, port, method, path, headers: flat, agent: false })
    const timer = setTimeout(() => req.destroy(new Error(`${method} ${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS)
    req.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    req.once('response', (res) => {
      const chunks = []
      res.on('data', (chunk) => chunks.push(chunk))
      res.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
      res.once('close', () => {
        if (!res.complete) {
          clearTimeout(timer)
          reject(new Error(`${method} ${path}: the answer broke off`))
        }
      })
      res.once('end', () => {
        clearTimeout(timer)
        const buffer = Buffer.concat(chunks)
        const text = buffer.toString('utf8')
        resolve({
          status: res.statusCode,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          buffer,
          text,
          json: () => JSON.parse(text)
        })
      })
    })
    if (Array.isArray(body)) {
      for (const chunk of body) req.write(chunk)
      req.end()
    } else {
      req.end(body)
    }
  })
}

/** The headers of a request carrying `authorization` (a `Bearer …` value from `mint`). */
const bearer = (authorization) => ({ Authorization: authorization })

/** How many times each header name occurs in a response. */
function headerCount (response, name) {
  let n = 0
  for (let i = 0; i < response.rawHeaders.length; i += 2) {
    if (response.rawHeaders[i].toLowerCase() === name.toLowerCase()) n++
  }
  return n
}

/** Checks that `response` is an RFC 9457 problem with `status` and `code`; answers its body. */
function assertProblem (response, status, code) {
  assert.equal(response.status, status, response.text)
  assert.equal(response.headers['content-type'], 'application/problem+json')
  assert.equal(Number(response.headers['content-length']), response.buffer.length)
  const body = response.json()
  assert.equal(body.type, 'about:blank')
  assert.equal(body.status, status)
  assert.equal(body.code, code)
  assert.equal(typeof body.detail, 'string')
  assert.ok(body.detail.length > 0)
  return body
}

/** Checks the decision's headers on `response`, each present once. */
function assertRateLimitHeaders (response, { rule, limit, remaining }) {
  for (const name of ['ratelimit-policy', 'ratelimit', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset']) {
    assert.equal(headerCount(response, name), 1, name)
  }
  assert.equal(response.headers['ratelimit-limit'], String(limit))
  assert.equal(response.headers['ratelimit-remaining'], String(remaining))
  assert.ok(response.headers['ratelimit-policy'].startsWith(`"${rule}";q=${limit};w=3600`), response.headers['ratelimit-policy'])
  assert.ok(response.headers.ratelimit.startsWith(`"${rule}";r=${remaining};t=`), response.headers.ratelimit)
  const reset = Number(response.headers['ratelimit-reset'])
  assert.ok(reset > 0 && reset <= 3600, String(reset))
}

/** The responses `engine` recorded: how many, and how many by status class. */
function responsesOf (engine) {
  const report = engine.report()
  return { count: report.totals.responses, classes: report.status_classes, maxLatencyUs: report.totals.max_latency_us }
}

/** What a route answers: the identity and decision the middleware handed it. */
function describeState (req, res) {
  const state = req.floodwall
  return {
    present: state !== undefined,
    sameAsLocals: state !== undefined && res.locals.floodwall === state,
    subject: state && state.identity ? state.identity.subject : null,
    role: state && state.identity ? state.identity.role : null,
    rule: state && state.decision ? state.decision.rule : null,
    remaining: state && state.decision ? state.decision.remaining : null,
    store: state && state.decision ? state.decision.store : null,
    decision: state ? state.decision !== null : null
  }
}

/** The pause between the two chunks `/api/slow` sends. */
const SLOW_PAUSE_MS = 50

/**
 * The Express application behind the middlewares: `middlewares` (an array of handlers)
 * before routes that report what they were handed (but `/api/boom`, which fails, and
 * `/api/slow`, which sends its body in two chunks `SLOW_PAUSE_MS` apart); `trustProxy` for
 * Express's setting (which floodwall does not read: the engine's `[http]` section decides). Errors passed to `next` are answered 500 with
 * `{ error: { name, code, message } }`.
 */
function makeApp (middlewares, { trustProxy } = {}) {
  const app = express()
  if (trustProxy !== undefined) app.set('trust proxy', trustProxy)
  for (const middleware of middlewares) app.use(middleware)
  const describe = (req, res) => res.json(describeState(req, res))
  app.get('/api/whoami', describe)
  app.get('/api/export', describe)
  app.get('/api/huge', describe)
  app.get('/public/info', describe)
  app.get('/health', describe)
  app.get('/keyed', describe)
  app.get('/api/own-header', (req, res) => {
    res.set('RateLimit-Limit', '999')
    res.send('own')
  })
  app.get('/api/boom', (req, res, next) => next(new Error('the route failed')))
  app.get('/api/slow', (req, res) => {
    res.write('one,')
    setTimeout(() => res.end('two'), SLOW_PAUSE_MS)
  })
  app.use((error, req, res, next) => {
    res.status(500).json({ error: { name: error.name, code: error.code || null, message: error.message } })
  })
  return app
}

/**
 * An upstream for the proxy tests that counts its calls. `mode` (changeable): `ok` answers
 * JSON describing the request it got (after reading its body), `fail` answers 500, `hang`
 * never answers, `break` sends headers and part of a body and then drops the connection. A
 * request to `/echo` streams its body back whatever the mode.
 */
async function startUpstream (name, mode = 'ok') {
  const upstream = { name, mode, hits: 0, requests: [] }
  const { port, close, server } = await listen((req, res) => {
    upstream.hits++
    upstream.requests.push({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders })
    if (req.url.startsWith('/echo')) {
      res.setHeader('Content-Type', req.headers['content-type'] || 'application/octet-stream')
      res.setHeader('X-Upstream', name)
      req.pipe(res)
      return
    }
    if (upstream.mode === 'hang') {
      req.resume()
      return
    }
    if (upstream.mode === 'break') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '1000', 'X-Upstream': name })
      res.write('partial')
      setImmediate(() => req.socket.destroy())
      return
    }
    const hash = crypto.createHash('sha256')
    let length = 0
    req.on('data', (chunk) => {
      hash.update(chunk)
      length += chunk.length
    })
    req.on('end', () => {
      const failing = upstream.mode === 'fail'
      res.writeHead(failing ? 500 : 200, {
        'Content-Type': 'application/json',
        'X-Upstream': name,
        'Set-Cookie': ['a=1', 'b=2'],
        Connection: 'keep-alive, X-Hop',
        'X-Hop': 'dropped',
        'Keep-Alive': 'timeout=5'
      })
      res.end(JSON.stringify({
        upstream: name,
        failing,
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyLength: length,
        bodySha256: hash.digest('hex')
      }))
    })
  })
  upstream.port = port
  upstream.url = `http://${HOST}:${port}`
  upstream.server = server
  upstream.close = close
  return upstream
}

module.exports = {
  HOST,
  USER_LIMIT,
  PREMIUM_LIMIT,
  PUBLIC_IP_LIMIT,
  SLOW_PAUSE_MS,
  rules,
  config,
  engineOf,
  listen,
  request,
  bearer,
  headerCount,
  assertProblem,
  assertRateLimitHeaders,
  makeApp,
  responsesOf,
  startUpstream
}
