'use strict'
/**
 * One Express app for bench/compare.js's load rows, in a process of its own so that the load
 * generator does not share its event loop: `node bench/express_app.js <variant> <secret>`
 * prints `port <n>` once listening. Variants:
 * - `bare`: the route alone;
 * - `guard`: floodwall's `guard()` (HS256 bearer token with the verified-token cache the
 *   configuration reference recommends, `cache = { max_entries = 10000, ttl = "5m" }`; a
 *   per-user limit that always admits);
 * - `peer`: jsonwebtoken's `verify` (pre-parsed key) in a middleware, then express-rate-limit
 *   keyed on the token's subject (its memory store), with the same limit.
 */

const crypto = require('node:crypto')
const path = require('node:path')

const peers = path.join(__dirname, 'node_modules')
const express = require(path.join(peers, 'express'))

const [variant, secret] = process.argv.slice(2)
const app = express()
app.disable('x-powered-by')

if (variant === 'guard') {
  const { Engine } = require('..')
  const { guard } = require('../express')
  const engine = Engine.fromObject({
    auth: { algorithms: ['HS256'], keys: [{ secret }], role_claim: 'role', cache: { max_entries: 10000, ttl: '5m' } },
    rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1e9, window: '1m' }],
    ...(process.env.FW_EXTRA ? JSON.parse(process.env.FW_EXTRA) : {})
  })
  app.use(guard(engine))
} else if (variant === 'peer') {
  const jwt = require(path.join(peers, 'jsonwebtoken'))
  const { rateLimit } = require(path.join(peers, 'express-rate-limit'))
  const key = crypto.createSecretKey(Buffer.from(secret))
  app.use((req, res, next) => {
    const header = req.headers.authorization || ''
    try {
      req.user = jwt.verify(header.slice(7), key, { algorithms: ['HS256'] })
      next()
    } catch {
      res.status(401).json({ error: 'invalid_token' })
    }
  })
  app.use(rateLimit({
    windowMs: 60_000,
    limit: 1e9,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    keyGenerator: (req) => req.user.sub
  }))
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
  server.close(() => process.exit(0))
})
