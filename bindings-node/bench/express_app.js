'use strict'
/**
 * One Express app for bench/compare.js's load rows, in a process of its own so that the load
 * generator does not share its event loop: `node bench/express_app.js <variant> <secret>`
 * prints `port <n>` once listening. Every guarded variant verifies an HS256 bearer token and
 * applies a per-user limit that always admits (10⁹ a minute). Variants:
 * - `bare`: the route alone;
 * - `guard`, `guard-redis`: floodwall's `guard()` on the memory store, or on the Redis store at
 *   `FW_REDIS_URL`, with the verified-token cache the configuration reference recommends
 *   (`cache = { max_entries = 10000, ttl = "5m" }`);
 * - `peer`, `peer-redis`: jsonwebtoken's `verify` (pre-parsed key) in a middleware, then
 *   express-rate-limit keyed on the token's subject — its memory store, or rate-limit-redis
 *   on ioredis;
 * - `rlf`, `rlf-redis`: the same jsonwebtoken middleware, then rate-limiter-flexible's
 *   `RateLimiterMemory` or `RateLimiterRedis` (ioredis) in a middleware, as its README shows.
 */

const crypto = require('node:crypto')
const path = require('node:path')

const peers = path.join(__dirname, 'node_modules')
const peer = (name) => require(path.join(peers, name))
const express = peer('express')

const [variant, secret] = process.argv.slice(2)
const redisUrl = process.env.FW_REDIS_URL
const LIMIT = 1e9
const app = express()
app.disable('x-powered-by')

/** jsonwebtoken in a middleware: the caller's claims on `req.user`, or a 401. */
function verifyToken () {
  const jwt = peer('jsonwebtoken')
  const key = crypto.createSecretKey(Buffer.from(secret))
  return (req, res, next) => {
    const header = req.headers.authorization || ''
    try {
      req.user = jwt.verify(header.slice(7), key, { algorithms: ['HS256'] })
      next()
    } catch {
      res.status(401).json({ error: 'invalid_token' })
    }
  }
}

function redisClient () {
  if (!redisUrl) throw new Error(`${variant} needs FW_REDIS_URL`)
  const Redis = peer('ioredis')
  return new Redis(redisUrl)
}

if (variant === 'guard' || variant === 'guard-redis') {
  const { Engine } = require('..')
  const { guard } = require('../express')
  const engine = Engine.fromObject({
    ...(variant === 'guard-redis' ? { store: { kind: 'redis', url: redisUrl, prefix: 'fwexpress:', timeout: '1s' } } : {}),
    auth: { algorithms: ['HS256'], keys: [{ secret }], role_claim: 'role', cache: { max_entries: 10000, ttl: '5m' } },
    rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: LIMIT, window: '1m' }],
    ...(process.env.FW_EXTRA ? JSON.parse(process.env.FW_EXTRA) : {})
  })
  app.use(guard(engine))
} else if (variant === 'peer' || variant === 'peer-redis') {
  const { rateLimit } = peer('express-rate-limit')
  let store
  if (variant === 'peer-redis') {
    const { RedisStore } = peer('rate-limit-redis')
    const client = redisClient()
    store = new RedisStore({ sendCommand: (command, ...args) => client.call(command, ...args), prefix: 'erlexpress:' })
  }
  app.use(verifyToken())
  app.use(rateLimit({
    windowMs: 60_000,
    limit: LIMIT,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    keyGenerator: (req) => req.user.sub,
    ...(store ? { store } : {})
  }))
} else if (variant === 'rlf' || variant === 'rlf-redis') {
  const { RateLimiterMemory, RateLimiterRedis } = peer('rate-limiter-flexible')
  const limiter = variant === 'rlf'
    ? new RateLimiterMemory({ points: LIMIT, duration: 60 })
    : new RateLimiterRedis({ storeClient: redisClient(), points: LIMIT, duration: 60, keyPrefix: 'rlfexpress' })
  app.use(verifyToken())
  app.use((req, res, next) => {
    limiter.consume(req.user.sub).then(() => next(), (rejection) => {
      if (rejection instanceof Error) return next(rejection)
      res.set('Retry-After', String(Math.ceil(rejection.msBeforeNext / 1000)))
      res.status(429).json({ error: 'rate_limited' })
    })
  })
} else if (variant !== 'bare') {
  throw new Error(`unknown variant ${variant}`)
}

let served = 0
let from = null
app.get('/api/hello', (req, res) => {
  if (++served === 1000) from = process.cpuUsage()
  res.json({ hello: 'world' })
})
const server = app.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`))
process.on('SIGTERM', () => {
  if (process.env.FW_CPU) {
    const { user, system } = process.cpuUsage(from)
    console.error(`${variant}: ${((user + system) / (served - 1000)).toFixed(1)} µs of CPU a request after the first 1,000 (${served} requests)`)
  }
  // An open Redis connection keeps the loop alive: leave without waiting for it.
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 1000).unref()
})
