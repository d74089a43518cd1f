'use strict'
/**
 * The HTTP conformance cases (tests/http/) over real HTTP against the reference gateway:
 * `createGateway` with every path routed to one service whose upstream is the suite's
 * application (it learns the caller from the gateway's `X-Floodwall-Subject` and
 * `X-Floodwall-Role`). Every expectation holds, and the transcript (gateway.json in
 * target/http-conformance/) is compared with every other host's by `make test`.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const path = require('node:path')

const { Engine } = require('floodwall')
const { createGateway } = require('../gateway.js')
const suite = require(path.join(__dirname, '..', '..', '..', 'tests', 'http', 'runner.js'))

/** The suite's application as an upstream: the caller is the one the gateway names. */
function upstream (req, res) {
  const subject = req.headers['x-floodwall-subject']
  req.floodwall = subject === undefined
    ? undefined
    : { identity: { subject, role: req.headers['x-floodwall-role'] ?? null } }
  suite.echo(req, res)
}

function listen (handler) {
  const server = http.createServer(handler)
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

async function close (server) {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
}

test('the gateway answers every case as every floodwall host does', async () => {
  const app = await listen(upstream)
  let current = null
  const gateway = await listen((req, res) => current(req, res))
  try {
    const echo = `http://127.0.0.1:${app.address().port}`
    const wrong = await suite.runSuite({
      runner: 'gateway',
      port: gateway.address().port,
      setUp: (c, config) => {
        // One upstream that never trips its breaker: the cases' 5xx answers are on purpose.
        config.services = { echo: { upstreams: [{ url: echo }], breaker: { min_calls: 1_000_000 } } }
        current = createGateway(Engine.fromObject(config), { routes: { '/': 'echo' }, cost: suite.cost })
      }
    })
    assert.deepEqual(wrong, [])
  } finally {
    await close(gateway)
    await close(app)
  }
})
