'use strict'
/**
 * The HTTP conformance cases (tests/http/) over real HTTP against Express with
 * `floodwall/express` in front of the suite's application: every expectation holds, on the
 * memory store and on a Redis of the test's own, and the transcripts (express.json,
 * express-redis.json in target/http-conformance/) are compared with every other host's by
 * `make test`.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const express = require('express')

const { Engine } = require('./helpers.js').floodwall
const { guard, rateLimit } = require('../express.js')
const { RedisServer } = require('./redis_server.js')
const suite = require('../../tests/http/runner.js')

/** One server for every case; each case swaps in its own application. */
async function serve (run) {
  let current = (req, res) => {
    res.statusCode = 503
    res.end()
  }
  const server = http.createServer((req, res) => current(req, res))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const setUp = (c, config) => {
    const engine = Engine.fromObject(config)
    const app = express()
    app.use(engine.hasAuth ? guard(engine, { cost: suite.cost }) : rateLimit(engine, { cost: suite.cost }))
    app.use(suite.echo)
    current = app
  }
  try {
    return await run(server.address().port, setUp)
  } finally {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
}

test('every case, on the memory store', async () => {
  const wrong = await serve((port, setUp) => suite.runSuite({ runner: 'express', port, setUp }))
  assert.deepEqual(wrong, [])
})

test('every case, on Redis', async () => {
  const redis = await RedisServer.start()
  try {
    let n = 0
    const wrong = await serve((port, setUp) => suite.runSuite({
      runner: 'express-redis',
      port,
      setUp: (c, config) => {
        n++
        if (config.store === undefined) {
          config.store = { kind: 'redis', url: redis.url, prefix: `e${n}:`, on_error: 'error', timeout: '2s' }
        }
        return setUp(c, config)
      }
    }))
    assert.deepEqual(wrong, [])
  } finally {
    await redis.stop()
  }
})
