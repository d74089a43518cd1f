'use strict'
/**
 * The reference Express gateway on floodwall.
 *
 *     /api/orders/**    → service `orders`  (orders-a, orders-b: round robin)
 *     /api/catalog/**   → service `catalog` (catalog-a, catalog-b: least connections)
 *     /dashboard        the live dashboard (HTML + JS + CSS served from public/, no build step)
 *     /dashboard/data   its JSON: the engine's report, each upstream's health, breaker trips
 *     /metrics          Prometheus text exposition of the engine's counters
 *     /health           liveness and the store's health: 503 while it is degraded or failing
 *
 * Every request passes `guard()` from `floodwall/express` first — the bearer token is
 * verified (401 otherwise) and every matching limit applied in one engine call (429 with
 * `Retry-After` when one is exhausted); the gateway's own pages are the engine's skipped
 * paths (`http.skip_paths`, lib/config.js) — then `proxy(service)`, which lets the engine
 * pick an upstream (its balancer, behind each upstream's circuit breaker), streams the call
 * through, and tells the upstream who the caller is (`X-Floodwall-Subject`,
 * `X-Floodwall-Role`). Every answer the gateway does not forward is the engine's, byte for
 * byte what any floodwall middleware answers. The engine records every decision and outcome
 * itself; the dashboard and the metrics only read them.
 *
 * Run `node gateway.js` (settings from the environment: lib/settings.js) with the sample
 * upstreams running, or `node demo.js`, which starts them too. With `GATEWAY_CONFIG` naming a
 * configuration file, the engine is built from it and reloaded on SIGHUP and whenever the file
 * changes (lib/reload.js); `node gateway.js --print-config` prints the configuration the
 * environment makes, to start such a file from. As a module:
 * `createGateway(engine, { routes, cost })` is the Express application (routes: path prefix
 * → service, `ROUTES` by default; cost: each request's cost, 1 by default), `startGateway(options)` builds the engine and listens (the
 * tests use both).
 */

const http = require('node:http')
const path = require('node:path')
const express = require('express')
const { Engine, FloodwallError, PROMETHEUS_CONTENT_TYPE } = require('floodwall')
const { guard, rateLimit, proxy, PROBLEM_CONTENT_TYPE } = require('floodwall/express')

const { HourlyTraffic } = require('./lib/hours.js')
const { engineConfig, BLOCKING_RULES, BLOCKING_ROLES } = require('./lib/config.js')
const { startup, SettingsError } = require('./lib/settings.js')
const { usageText } = require('./lib/usage.js')
const { ConfigReloader } = require('./lib/reload.js')

const PUBLIC_DIR = path.join(__dirname, 'public')
/** uPlot's built files (`uPlot.iife.min.js`, `uPlot.min.css`), which the dashboard draws its chart with. */
const UPLOT_DIR = path.join(path.dirname(require.resolve('uplot/package.json')), 'dist')
/** How often the report's finished minutes are added to the hours (lib/hours.js). */
const HOUR_FOLD_MS = 60_000
/** How many breaker state changes the dashboard lists (the newest). */
const RECENT_BREAKER_EVENTS = 20
/** The services the gateway routes to, by path prefix. */
const ROUTES = Object.freeze({ '/api/orders': 'orders', '/api/catalog': 'catalog' })

function sendProblem (res, status, title, detail, code) {
  const body = JSON.stringify({ type: 'about:blank', title, status, detail, code })
  res.writeHead(status, { 'Content-Type': PROBLEM_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) })
  res.end(body)
}

/**
 * The breaker state changes the dashboard shows: read from the engine after the last one
 * seen, the newest RECENT_BREAKER_EVENTS kept.
 */
class BreakerLog {
  constructor (engine) {
    this.engine = engine
    this.lastSeq = 0
    this.recent = []
  }

  /** The kept events, newest first, after reading any new ones. */
  read () {
    for (const event of this.engine.breakerEvents(this.lastSeq)) {
      this.lastSeq = Math.max(this.lastSeq, event.seq)
      this.recent.push(event)
    }
    if (this.recent.length > RECENT_BREAKER_EVENTS) this.recent.splice(0, this.recent.length - RECENT_BREAKER_EVENTS)
    return this.recent.slice().reverse()
  }
}

/**
 * What `/dashboard/data` answers:
 *
 * - `report`: `engine.report()` as the engine gives it (snake_case: per-minute traffic and
 *   its peaks, top endpoints, breaches, breaker trips, stores, the stream sink).
 * - `services`: by service, `engine.upstreams(service)` as the engine gives them (camelCase),
 *   each with `healthy` added: it takes calls — not marked down, its breaker not open (a
 *   half-open breaker admits probes), as the `floodwall_upstream_up` metric counts it.
 * - `breaker_events`: the latest breaker state changes, newest first.
 * - `store`: the store in use and its last failure.
 * - `blocked`: the callers a blocking rule blocks now, `{ rule, subject, role,
 *   blocked_for_ms }` (asked of the engine for the subjects with the most breaches, under
 *   each role that counts apart; `role` null for the rule's default policy).
 * - `hours`: the traffic of each clock hour since the gateway started (a week at most),
 *   `[{ start_ms, requests, admitted, rate_limited, auth_rejected }]` (lib/hours.js), for
 *   the peak hours of the day.
 * - `config`: where the configuration comes from — `{ file: null }` (the environment), or
 *   the file with its reloads, refused reloads and the latest attempt (`{ at_ms, trigger,
 *   summary }` or `{ at_ms, trigger, error }`).
 */
async function dashboardData (engine, breakerLog, reloader = null, hourly = new HourlyTraffic()) {
  const report = engine.report()
  const services = {}
  for (const service of Object.values(ROUTES)) {
    services[service] = engine.upstreams(service).map((upstream) => ({
      ...upstream,
      healthy: !upstream.down && upstream.state !== 'open'
    }))
  }
  return {
    generated_at_ms: report.generated_at_ms,
    store: { kind: engine.storeKind, failure: engine.storeFailure, health: storeHealth(engine) },
    report,
    services,
    breaker_events: breakerLog.read(),
    blocked: await blockedCallers(engine, report),
    hours: hourly.hours(report),
    config: reloader === null ? { file: null } : reloader.status()
  }
}

/** The callers among the top breachers whom a blocking rule blocks now, longest block first. */
async function blockedCallers (engine, report) {
  const subjects = (report.breaches_by_subject || []).map((entry) => entry.key)
  const asked = subjects.flatMap((subject) => BLOCKING_RULES.flatMap((rule) => BLOCKING_ROLES.map(async (role) => {
    try {
      const status = await engine.inspect(rule, subject, { role })
      return status.blockedForMs === null ? null : { rule, subject, role, blocked_for_ms: status.blockedForMs }
    } catch {
      // The store did not answer: the list shows what it could learn.
      return null
    }
  })))
  return (await Promise.all(asked)).filter((b) => b !== null).sort((a, b) => b.blocked_for_ms - a.blocked_for_ms)
}

/** `engine.storeHealth` in the gateway's snake_case JSON. */
function storeHealth (engine) {
  const h = engine.storeHealth
  return { state: h.state, since_ms: h.sinceMs, reason: h.reason, reason_kind: h.reasonKind }
}

/**
 * The gateway's Express application over `engine`, proxying each prefix of `routes` to its
 * service; `reloader` (a ConfigReloader, or null) is what the dashboard says of reloads.
 */
function createGateway (engine, { routes = ROUTES, cost, reloader = null, hourly = new HourlyTraffic() } = {}) {
  const app = express()
  app.disable('x-powered-by')
  const breakerLog = new BreakerLog(engine)

  // Every request: the token and the limits (only the limits for an engine without [auth]).
  // The gateway's own pages below are the engine's skipped paths, handed on untouched.
  app.use(engine.hasAuth ? guard(engine, { cost }) : rateLimit(engine, { cost }))

  // 503 while the store is degraded or failing: limits no longer hold across processes (or at
  // all), and the reason says why.
  app.get('/health', (req, res) => {
    const health = storeHealth(engine)
    const ok = health.state === 'ok'
    res.status(ok ? 200 : 503).set('Cache-Control', 'no-store')
    res.json({ service: 'floodwall-express-gateway', ok, store: engine.storeKind, store_health: health, store_failure: engine.storeFailure })
  })

  app.get('/metrics', (req, res) => {
    const text = engine.prometheus()
    // Written directly: res.send would reorder the media type's parameters.
    res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' })
    res.end(text)
  })

  // The dashboard: a static page whose script polls /dashboard/data. Nothing inline, nothing
  // from elsewhere, so the policy can forbid both.
  const dashboardHeaders = (res) => {
    res.set('Content-Security-Policy', "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'")
    res.set('X-Content-Type-Options', 'nosniff')
  }
  app.get('/dashboard', (req, res, next) => {
    dashboardHeaders(res)
    res.sendFile(path.join(PUBLIC_DIR, 'dashboard.html'), (error) => { if (error) next(error) })
  })
  app.get('/dashboard/data', (req, res, next) => {
    dashboardData(engine, breakerLog, reloader, hourly).then((data) => {
      res.set('Cache-Control', 'no-store')
      res.json(data)
    }, next)
  })
  app.use('/dashboard/assets', express.static(PUBLIC_DIR, { index: false, setHeaders: dashboardHeaders }))
  // The charting library, uPlot, from the package's own dependencies (no CDN).
  app.use('/dashboard/vendor', express.static(UPLOT_DIR, { index: false, setHeaders: dashboardHeaders }))

  // Per-key administration, for callers whose token carries the `admin` role:
  //   GET    /admin/keys/:rule/:key              what the key has left
  //   DELETE /admin/keys/:rule/:key              start it afresh
  //   POST   /admin/keys/:rule/:key/penalize?points=N | reward?points=N | block?ms=N
  //   POST   /admin/keys/:rule/:key/limit?limit=N&ms=M  its own limit for M ms (key_limits rules)
  //   DELETE /admin/keys/:rule/:key/limit               its policy's limit again
  // (`?role=premium` picks a role's policy; `-` as the key names requests lacking it).
  const admin = express.Router()
  admin.use((req, res, next) => {
    const identity = req.floodwall && req.floodwall.identity
    if (!identity || identity.role !== 'admin') {
      sendProblem(res, 403, 'Forbidden', 'Key administration needs a token with the admin role.', 'access_denied')
      return
    }
    next()
  })
  const keyOf = (req) => [req.params.rule, req.params.key === '-' ? null : req.params.key, { role: req.query.role || undefined }]
  const count = (value, name) => {
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`${name} must be a non-negative integer, not ${JSON.stringify(value)}`)
    return n
  }
  const answer = (res, next, work) => work().then((body) => {
    res.set('Cache-Control', 'no-store')
    if (body === undefined) res.status(204).end()
    else res.json(body)
  }, (error) => {
    if (error instanceof TypeError) sendProblem(res, 400, 'Bad Request', error.message, 'invalid_argument')
    else if (error instanceof FloodwallError && error.code === 'unknown_rule') sendProblem(res, 404, 'Not Found', error.message, error.code)
    else if (error instanceof FloodwallError && error.code === 'invalid_config') sendProblem(res, 409, 'Conflict', error.message, error.code)
    else next(error)
  })
  admin.get('/keys/:rule/:key', (req, res, next) => answer(res, next, async () => {
    const [rule, key, options] = keyOf(req)
    return { rule, key, ...(await engine.inspect(rule, key, options)) }
  }))
  admin.delete('/keys/:rule/:key', (req, res, next) => answer(res, next, async () => {
    await engine.resetKey(...keyOf(req))
  }))
  admin.delete('/keys/:rule/:key/limit', (req, res, next) => answer(res, next, async () => {
    await engine.clearKeyLimit(...keyOf(req))
  }))
  admin.post('/keys/:rule/:key/:op', (req, res, next) => answer(res, next, async () => {
    const [rule, key, options] = keyOf(req)
    const op = req.params.op
    if (op === 'block') await engine.blockKey(rule, key, count(req.query.ms, 'ms'), options)
    else if (op === 'penalize' || op === 'reward') await engine[op](rule, key, count(req.query.points, 'points'), options)
    else if (op === 'limit') await engine.setKeyLimit(rule, key, count(req.query.limit, 'limit'), count(req.query.ms, 'ms'), options)
    else throw new TypeError(`no key operation ${JSON.stringify(op)}: use penalize, reward, block or limit`)
  }))
  app.use('/admin', admin)

  // The API: proxied to its service, the caller named to the upstream.
  for (const [prefix, service] of Object.entries(routes)) {
    app.use(prefix, proxy(engine, service, { timeoutMs: 5000, identityHeaders: true }))
  }

  app.use((req, res) => {
    sendProblem(res, 404, 'Not Found', `Nothing is routed at ${req.path}: the API is under /api/orders and /api/catalog.`, 'not_found')
  })

  // Errors the middlewares hand on (an engine error of the proxy's, such as an unknown
  // upstream after a change): a problem body with the status the engine's error names.
  app.use((error, req, res, next) => {
    if (res.headersSent) {
      next(error)
      return
    }
    if (error instanceof FloodwallError) {
      sendProblem(res, error.status, http.STATUS_CODES[error.status] || 'Error', error.message, error.code)
      return
    }
    console.error(`gateway: ${req.method} ${req.originalUrl}: ${error && error.stack ? error.stack : error}`)
    sendProblem(res, 500, 'Internal Server Error', 'The gateway failed to handle the request.', 'internal_error')
  })
  return app
}

/** The engine configuration `settings` make without a file (`limits` … go to `engineConfig`). */
function configOf ({ settings, limits, breaker, redisPrefix, stream }) {
  return engineConfig({
    secret: settings.secret,
    upstreams: settings.upstreams,
    redisUrl: settings.redisUrl,
    limits,
    breaker,
    redisPrefix,
    stream
  })
}

/**
 * Builds the engine from `settings` (lib/settings.js) and serves the gateway on `host`:`port`
 * (default: the settings'; port 0 picks a free one). Without `settings.configFile`,
 * `limits`, `breaker`, `redisPrefix` and `stream` go to `engineConfig`; with it, the engine
 * is the file's and `reloader` watches it (unless `watch` is false; `reloadDebounceMs` and
 * `log`, the console by default, for the tests). Resolves with `{ engine, server, url, reloader, close() }` (`reloader` null
 * without a file).
 */
async function startGateway ({ settings, port = settings.gatewayPort, host = settings.host, limits, breaker, redisPrefix, stream, watch = true, reloadDebounceMs, log }) {
  const file = settings.configFile || null
  const engine = file === null
    ? Engine.fromObject(configOf({ settings, limits, breaker, redisPrefix, stream }))
    : Engine.fromFile(file)
  const reloader = file === null ? null : new ConfigReloader(engine, file, { debounceMs: reloadDebounceMs, log })
  if (reloader !== null && watch) reloader.watch()
  engine.on('storeHealth', (health, message) => {
    (health.state === 'ok' ? console.log : console.warn)(`gateway: ${message}`)
  })
  // The hours fold the report's minutes in every minute, whether or not the page is open.
  const hourly = new HourlyTraffic()
  const folding = setInterval(() => hourly.fold(engine.report()), HOUR_FOLD_MS)
  folding.unref()
  const server = http.createServer(createGateway(engine, { reloader, hourly }))
  server.keepAliveTimeout = 65_000
  await new Promise((resolve, reject) => {
    server.once('error', (error) => {
      if (reloader !== null) reloader.unwatch()
      clearInterval(folding)
      reject(error)
    })
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address()
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  let closing = null
  const close = () => {
    if (closing === null) {
      if (reloader !== null) reloader.unwatch()
      clearInterval(folding)
      closing = new Promise((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
    }
    return closing
  }
  return { engine, server, url, reloader, close }
}

/** The command line: `--print-config` or nothing. */
function parseArgs (args) {
  const options = { printConfig: false }
  for (const arg of args) {
    if (arg === '--print-config') options.printConfig = true
    else throw new SettingsError(`unknown argument ${JSON.stringify(arg)}: the gateway takes --print-config or nothing (settings come from the environment)`)
  }
  return options
}

async function main () {
  const { settings, options } = startup('gateway', parseArgs)
  if (options.printConfig) {
    process.stdout.write(JSON.stringify(configOf({ settings }), null, 2) + '\n')
    return
  }
  let gateway
  try {
    gateway = await startGateway({ settings })
  } catch (error) {
    const reason = error.code === 'EADDRINUSE'
      ? `port ${settings.gatewayPort} is in use (set GATEWAY_PORT to another)`
      : error.message
    console.error(`gateway: cannot start: ${reason}`)
    process.exit(1)
  }
  console.log(usageText({ url: gateway.url, settings, storeKind: gateway.engine.storeKind }))
  process.on('SIGHUP', () => {
    if (gateway.reloader !== null) gateway.reloader.reload('SIGHUP')
    else console.warn('gateway: SIGHUP: nothing to reload, the configuration comes from the environment (set GATEWAY_CONFIG to a file to reload it live)')
  })
  const stop = () => gateway.close().then(() => process.exit(0))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  if (process.send) {
    process.on('disconnect', stop) // started by demo.js, which went away
    process.send({ ready: gateway.server.address().port })
  }
}

if (require.main === module) main()

module.exports = { createGateway, startGateway, configOf, dashboardData, ROUTES }
