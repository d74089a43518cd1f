'use strict'
/**
 * A sample upstream service for the gateway: a small JSON API on node:http, one process per
 * upstream (the demo starts four). Each answers as the service it belongs to and names itself
 * in an `X-Upstream` header and in its body, so that a caller can see where the balancer sent
 * a request.
 *
 * - `orders`: `GET /api/orders`, `GET /api/orders/:id`, `POST /api/orders` (201; the body is
 *   read and its size echoed).
 * - `catalog`: `GET /api/catalog`, `GET /api/catalog/:sku`.
 * - Anything else under its service: 404; `GET /health`: 200.
 *
 * A flaky upstream (orders-b in the demo) fails on demand, so that its circuit breaker can be
 * seen to open: every request whose query has `fail=1` gets a 503, and `failureRate` (0 to 1,
 * `FLAKY_FAILURE_RATE` in the demo) makes that share of all its calls fail, spread evenly
 * (call n fails when floor(n·rate) steps up: no randomness). An upstream that is not flaky
 * ignores both.
 *
 * Run alone: `node upstream.js SERVICE NAME PORT [--flaky] [--failure-rate R]` (127.0.0.1).
 * Started by `demo.js` with an IPC channel, it reports `{ ready: port }` once it listens and
 * exits when its parent goes away.
 */

const http = require('node:http')

const { parsePort, SettingsError } = require('./lib/settings.js')

const SAMPLE_ORDERS = [
  { id: 1, item: 'espresso machine', quantity: 1, status: 'shipped' },
  { id: 2, item: 'coffee beans 1 kg', quantity: 3, status: 'processing' },
  { id: 3, item: 'milk frother', quantity: 1, status: 'delivered' }
]
const SAMPLE_PRODUCTS = [
  { sku: 'esp-100', name: 'espresso machine', price_cents: 34900 },
  { sku: 'bean-1k', name: 'coffee beans 1 kg', price_cents: 2400 },
  { sku: 'froth-2', name: 'milk frother', price_cents: 5900 }
]
/** The most request body bytes read from one POST (the rest is refused with 413). */
const MAX_BODY_BYTES = 64 * 1024

function sendJson (res, status, body, upstreamName) {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'X-Upstream': upstreamName
  })
  res.end(text)
}

/**
 * An `http.Server` (not yet listening) for upstream `name` of `service`; `flaky` and
 * `failureRate` as described above.
 */
function createUpstream ({ service, name, flaky = false, failureRate = 0 }) {
  if (service !== 'orders' && service !== 'catalog') throw new TypeError(`unknown sample service ${JSON.stringify(service)} (orders or catalog)`)
  let calls = 0
  const failsNow = (url) => {
    if (!flaky) return false
    calls++
    if (url.searchParams.get('fail') === '1') return true
    return Math.floor(calls * failureRate) > Math.floor((calls - 1) * failureRate)
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://upstream.invalid')
    const path = url.pathname.replace(/\/+$/, '') || '/'
    if (path === '/health') {
      sendJson(res, 200, { service, upstream: name, ok: true }, name)
      return
    }
    if (failsNow(url)) {
      req.resume()
      sendJson(res, 503, { service, upstream: name, error: 'this upstream is flaky and failed the call on purpose' }, name)
      return
    }
    const parts = path.split('/').filter(Boolean) // ['api', service, id?]
    if (parts[0] !== 'api' || parts[1] !== service || parts.length > 3) {
      req.resume()
      sendJson(res, 404, { service, upstream: name, error: `no such resource: ${path}` }, name)
      return
    }
    const id = parts[2]
    if (req.method === 'POST' && service === 'orders' && id === undefined) {
      let size = 0
      req.on('data', (chunk) => {
        size += chunk.length
        if (size > MAX_BODY_BYTES) {
          sendJson(res, 413, { service, upstream: name, error: `the body is over ${MAX_BODY_BYTES} bytes` }, name)
          req.destroy()
        }
      })
      req.on('end', () => {
        if (!res.headersSent) sendJson(res, 201, { service, upstream: name, created: true, body_bytes: size }, name)
      })
      return
    }
    req.resume()
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { service, upstream: name, error: `${req.method} is not allowed here` }, name)
      return
    }
    const items = service === 'orders' ? SAMPLE_ORDERS : SAMPLE_PRODUCTS
    if (id === undefined) {
      sendJson(res, 200, { service, upstream: name, items }, name)
      return
    }
    const found = items.find((item) => String(service === 'orders' ? item.id : item.sku) === id)
    // Any id is answered (a made-up record for unknown ones), so that load can spread over ids.
    const item = found || (service === 'orders'
      ? { id, item: 'sample order', quantity: 1, status: 'processing' }
      : { sku: id, name: 'sample product', price_cents: 1000 })
    sendJson(res, 200, { service, upstream: name, item }, name)
  })
  server.keepAliveTimeout = 65_000
  return server
}

/** Starts `createUpstream(options)` on 127.0.0.1:`port` (0: a free port); resolves with the server. */
function listenUpstream (options, port) {
  const server = createUpstream(options)
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

function parseArgs (argv) {
  const usage = 'usage: node upstream.js orders|catalog NAME PORT [--flaky] [--failure-rate 0..1]'
  const positional = []
  let flaky = false
  let failureRate = 0
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--flaky') flaky = true
    else if (argv[i] === '--failure-rate') {
      failureRate = Number(argv[++i])
      if (!Number.isFinite(failureRate) || failureRate < 0 || failureRate > 1) throw new SettingsError(`--failure-rate must be a number from 0 to 1\n${usage}`)
    } else positional.push(argv[i])
  }
  if (positional.length !== 3) throw new SettingsError(usage)
  const [service, name, port] = positional
  if (service !== 'orders' && service !== 'catalog') throw new SettingsError(`the service must be orders or catalog, not ${JSON.stringify(service)}\n${usage}`)
  return { service, name, flaky, failureRate, port: parsePort('PORT', port) }
}

async function main () {
  let options
  try {
    options = parseArgs(process.argv.slice(2))
  } catch (error) {
    console.error(error.message)
    process.exit(2)
  }
  let server
  try {
    server = await listenUpstream(options, options.port)
  } catch (error) {
    console.error(`upstream ${options.name}: cannot listen on 127.0.0.1:${options.port}: ${error.message}`)
    process.exit(1)
  }
  const stop = () => {
    server.close(() => process.exit(0))
    server.closeAllConnections()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  if (process.send) {
    process.on('disconnect', stop) // the launcher went away: so do we
    process.send({ ready: options.port })
  } else {
    console.log(`upstream ${options.name} (${options.service}${options.flaky ? ', flaky' : ''}) on http://127.0.0.1:${options.port}`)
  }
}

if (require.main === module) main()

module.exports = { createUpstream, listenUpstream }
