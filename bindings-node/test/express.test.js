'use strict'
/**
 * `floodwall/express` over real HTTP (servers on 127.0.0.1, free ports): the adapter's part
 * of the answers — what reaches the application (`req.floodwall`, `res.locals`), the headers
 * it adds without replacing the application's, the engine's answers written as given, the
 * `skip` and `cost` options, the `[http]` section read by the engine (public and skipped
 * paths, trusted proxies; Express's own `trust proxy` plays no part), allow and deny lists
 * changed while serving, `authenticate` + `rateLimit` giving `guard`'s answers — then `proxy`
 * in front of real upstream servers (round robin, a breaker opening on 500s, 502/503/504,
 * streamed bodies, clients going away, every lease finished once), the responses the engine
 * records (once each, with the status the client got), `metrics`, and all of it on a real
 * Redis. What every host answers alike is checked by the conformance suite
 * (http_conformance.test.js).
 */

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const crypto = require('node:crypto')
const net = require('node:net')
const express = require('express')

const { floodwall, mint, redisStore, waitUntil, NEW_SECRET } = require('./helpers.js')
const { RedisServer, freePort } = require('./redis_server.js')
const H = require('./express_http.js')
// The package's own name (its "exports" map), as users require it.
const fw = require('floodwall/express')

const { Engine, FloodwallError } = floodwall
const { authenticate, rateLimit, guard, proxy, metrics } = fw
const { USER_LIMIT, PREMIUM_LIMIT, PUBLIC_IP_LIMIT } = H

/** The engine of the tests, with `/public/**` public and `/health` skipped. */
const engineOf = (options = {}) => H.engineOf({ ...options, http: { public_paths: ['/public/**'], skip_paths: ['/health'], ...options.http } })

/** Serves `app` for the length of `fn(port)`. */
async function serving (app, fn) {
  const server = await H.listen(app)
  try {
    return await fn(server.port)
  } finally {
    await server.close()
  }
}

const get = (port, path, headers = {}) => H.request(port, { path, headers })
const times = async (n, fn) => {
  const out = []
  for (let i = 0; i < n; i++) out.push(await fn(i))
  return out
}

describe('guard', () => {
  test('admits a request with its RateLimit headers and hands over the identity', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const response = await get(port, '/api/whoami', H.bearer(mint('alice', { role: 'free' })))
      assert.equal(response.status, 200, response.text)
      assert.deepEqual(response.json(), {
        present: true,
        sameAsLocals: true,
        subject: 'alice',
        role: 'free',
        rule: 'per-user',
        remaining: USER_LIMIT - 1,
        store: 'memory',
        decision: true
      })
      H.assertRateLimitHeaders(response, { rule: 'per-user', limit: USER_LIMIT, remaining: 2 })
      assert.equal(response.headers['retry-after'], undefined)
    })
  })

  test('writes the engine\'s 429 as it is, while another caller is admitted', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const alice = H.bearer(mint('alice'))
      const admitted = await times(USER_LIMIT, () => get(port, '/api/whoami', alice))
      const denied = await get(port, '/api/whoami', alice)
      const other = await get(port, '/api/whoami', H.bearer(mint('bob')))
      assert.deepEqual(admitted.map((r) => r.status), Array(USER_LIMIT).fill(200))
      const body = H.assertProblem(denied, 429, 'rate_limited')
      assert.equal(body.title, 'Too Many Requests')
      assert.equal(body.rule, 'per-user')
      assert.equal(body.retry_after, 3600)
      assert.equal(body.detail, 'The rate limit is exhausted; retry in 3600 s.')
      assert.equal(denied.headers['retry-after'], '3600')
      H.assertRateLimitHeaders(denied, { rule: 'per-user', limit: USER_LIMIT, remaining: 0 })
      assert.equal(other.status, 200)
      assert.equal(other.json().subject, 'bob')
    })
  })

  test('gives a premium caller the premium limit', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const premium = H.bearer(mint('carol', { role: 'premium' }))
      const free = H.bearer(mint('dave', { role: 'free' }))
      const premiumCodes = await times(PREMIUM_LIMIT + 1, async () => (await get(port, '/api/whoami', premium)).status)
      const freeCodes = await times(USER_LIMIT + 1, async () => (await get(port, '/api/whoami', free)).status)
      assert.deepEqual(premiumCodes, [...Array(PREMIUM_LIMIT).fill(200), 429])
      assert.deepEqual(freeCodes, [...Array(USER_LIMIT).fill(200), 429])
    })
  })

  test('answers a request without a token 401 missing_token, with the bare challenge', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const response = await get(port, '/api/whoami')
      const body = H.assertProblem(response, 401, 'missing_token')
      assert.equal(body.title, 'Unauthorized')
      assert.equal(body.detail, 'The request carries no bearer token in its Authorization header.')
      assert.equal(response.headers['www-authenticate'], 'Bearer realm="floodwall"')
      assert.equal(response.headers.ratelimit, undefined)
    })
  })

  const refused = [
    ['expired', () => mint('alice', { expiresIn: -3600 })],
    ['bad_signature', () => mint('alice', { secret: NEW_SECRET })],
    ['malformed_token', () => 'Bearer not-a-jwt']
  ]
  for (const [code, authorization] of refused) {
    test(`answers a refused token 401 ${code}, invalid_token, never echoing it`, async () => {
      const value = authorization()
      const token = value.slice('Bearer '.length)
      await serving(H.makeApp([guard(engineOf())]), async (port) => {
        const response = await get(port, '/api/whoami', { Authorization: value })
        H.assertProblem(response, 401, code)
        const challenge = response.headers['www-authenticate']
        assert.ok(challenge.startsWith('Bearer realm="floodwall", error="invalid_token"'), challenge)
        assert.ok(!response.text.includes(token))
        assert.ok(!challenge.includes(token))
      })
    })
  }

  test('takes two Authorization headers as one malformed token', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const response = await get(port, '/api/whoami', [
        ['Authorization', mint('alice')],
        ['Authorization', mint('mallory')]
      ])
      H.assertProblem(response, 401, 'malformed_token')
    })
  })

  test('public and skipped paths come from the [http] section', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const codes = await times(PUBLIC_IP_LIMIT, async () => (await get(port, '/public/info')).status)
      const denied = await get(port, '/public/info', H.bearer(mint('alice')))
      assert.deepEqual(codes, Array(PUBLIC_IP_LIMIT).fill(200))
      assert.equal(H.assertProblem(denied, 429, 'rate_limited').rule, 'per-ip')
      const health = await times(USER_LIMIT + 2, () => get(port, '/health'))
      for (const response of health) {
        assert.equal(response.status, 200)
        assert.equal(response.json().present, false, 'a skipped request reaches the route untouched')
        assert.equal(response.headers.ratelimit, undefined)
      }
      // A spelling that may route elsewhere is not exempted.
      H.assertProblem(await get(port, '/public/../api/whoami'), 401, 'missing_token')
      H.assertProblem(await get(port, '//health'), 401, 'missing_token')
    })
  })

  test('hands a public request through with no identity, even with a token', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const response = await get(port, '/public/info', H.bearer(mint('alice')))
      assert.equal(response.status, 200)
      assert.deepEqual(response.json(), {
        present: true,
        sameAsLocals: true,
        subject: null,
        role: null,
        rule: 'per-ip',
        remaining: PUBLIC_IP_LIMIT - 1,
        store: 'memory',
        decision: true
      })
    })
  })

  test('leaves a request skip(req) accepts alone', async () => {
    await serving(H.makeApp([guard(engineOf(), { skip: (req) => req.get('x-skip') === 'yes' })]), async (port) => {
      const flagged = await get(port, '/api/whoami', { 'X-Skip': 'yes' })
      assert.equal(flagged.status, 200)
      assert.equal(flagged.json().present, false)
      H.assertProblem(await get(port, '/api/whoami', { 'X-Skip': 'no' }), 401, 'missing_token')
    })
  })

  test('charges each route its cost; a cost over every limit is 429 without Retry-After', async () => {
    const cost = (req) => req.path === '/api/export' ? USER_LIMIT : req.path === '/api/huge' ? 100 : 1
    await serving(H.makeApp([guard(engineOf(), { cost })]), async (port) => {
      const alice = H.bearer(mint('alice'))
      const exported = await get(port, '/api/export', alice)
      assert.equal(exported.status, 200)
      assert.equal(exported.json().remaining, 0)
      H.assertProblem(await get(port, '/api/export', alice), 429, 'rate_limited')
      const bob = H.bearer(mint('bob'))
      const huge = await get(port, '/api/huge', bob)
      H.assertProblem(huge, 429, 'cost_exceeds_limit')
      assert.equal(huge.headers['retry-after'], undefined)
      const after = await get(port, '/api/whoami', bob)
      assert.equal(after.json().remaining, USER_LIMIT - 1, 'the refused cost took nothing')
    })
  })

  test('answers a cost that is no count 400 invalid_cost, and hands an exception of cost to next(err)', async () => {
    const cost = (req) => {
      if (req.path === '/api/export') throw new Error('cost exploded')
      return req.path === '/api/huge' ? 1.5 : req.path === '/api/own-header' ? '2' : 1
    }
    await serving(H.makeApp([guard(engineOf(), { cost })]), async (port) => {
      const thrown = await get(port, '/api/export', H.bearer(mint('alice')))
      assert.equal(thrown.status, 500)
      assert.equal(thrown.json().error.message, 'cost exploded')
      H.assertProblem(await get(port, '/api/huge', H.bearer(mint('alice'))), 400, 'invalid_cost')
      H.assertProblem(await get(port, '/api/own-header', H.bearer(mint('alice'))), 400, 'invalid_cost')
      assert.equal((await get(port, '/api/whoami', H.bearer(mint('alice')))).json().remaining, USER_LIMIT - 1)
    })
  })

  test('keys address rules on the peer, and on a forwarded address only from http.trusted_proxies', async () => {
    // Express's own `trust proxy` is not what decides: the engine's [http] section is.
    await serving(H.makeApp([guard(engineOf())], { trustProxy: true }), async (port) => {
      const codes = await times(PUBLIC_IP_LIMIT + 1, async (i) =>
        (await get(port, '/public/info', { 'X-Forwarded-For': `203.0.113.${i + 1}` })).status)
      assert.deepEqual(codes, [...Array(PUBLIC_IP_LIMIT).fill(200), 429])
    })
    const trusting = engineOf({ http: { trusted_proxies: ['127.0.0.1', '::1'] } })
    await serving(H.makeApp([guard(trusting)]), async (port) => {
      const distinct = await times(PUBLIC_IP_LIMIT + 1, async (i) =>
        (await get(port, '/public/info', { 'X-Forwarded-For': `203.0.113.${i + 1}` })).status)
      assert.deepEqual(distinct, Array(PUBLIC_IP_LIMIT + 1).fill(200))
      assert.equal((await get(port, '/public/info', { 'X-Forwarded-For': '[::ffff:203.0.113.1]:4711' })).status, 200)
      const over = await get(port, '/public/info', { 'X-Forwarded-For': '198.51.100.9, 203.0.113.1' })
      assert.equal(H.assertProblem(over, 429, 'rate_limited').rule, 'per-ip')
    })
  })

  test('lets the application replace a RateLimit header it sets itself', async () => {
    await serving(H.makeApp([guard(engineOf())]), async (port) => {
      const response = await get(port, '/api/own-header', H.bearer(mint('alice')))
      assert.equal(response.status, 200)
      assert.equal(response.text, 'own')
      assert.equal(H.headerCount(response, 'ratelimit-limit'), 1)
      assert.equal(response.headers['ratelimit-limit'], '999')
      assert.equal(response.headers['ratelimit-remaining'], String(USER_LIMIT - 1))
    })
  })

  test('sees the whole target when mounted under a prefix, and its every spelling', async () => {
    const engine = engineOf()
    const app = express()
    app.use('/api', guard(engine))
    app.get('/api/whoami', (req, res) => res.json({ rule: req.floodwall.decision.rule, remaining: req.floodwall.decision.remaining }))
    await serving(app, async (port) => {
      const alice = H.bearer(mint('alice'))
      assert.deepEqual((await get(port, '/api/whoami', alice)).json(), { rule: 'per-user', remaining: 2 })
      // `/API/WhoAmI` is Express's `/api/whoami` (it routes case-insensitively): the same limit.
      assert.deepEqual((await get(port, '/API/WhoAmI', alice)).json(), { rule: 'per-user', remaining: 1 })
      // `/api/wh%6Fami` routes nowhere in Express, but counts against the same limit.
      const encoded = await get(port, '/api/wh%6Fami', alice)
      assert.equal(encoded.status, 404)
      H.assertRateLimitHeaders(encoded, { rule: 'per-user', limit: USER_LIMIT, remaining: 0 })
      H.assertProblem(await get(port, '/api/whoami/', alice), 429, 'rate_limited')
    })
  })

  test('fails closed: an engine whose [auth] was removed answers 503, never lets a request through', async () => {
    const engine = engineOf()
    await serving(H.makeApp([guard(engine)]), async (port) => {
      engine.reloadAuth(null)
      const response = await get(port, '/api/whoami', H.bearer(mint('alice')))
      H.assertProblem(response, 503, 'invalid_config')
      engine.reloadAuth(H.config().auth)
      assert.equal((await get(port, '/api/whoami', H.bearer(mint('alice')))).status, 200)
    })
  })

  test('sees allow and deny lists changed while it serves, and the headers they name', async () => {
    const engine = engineOf({ http: { trusted_proxies: ['127.0.0.1', '::1'] } })
    await serving(H.makeApp([guard(engine)]), async (port) => {
      const alice = H.bearer(mint('alice'))
      assert.equal((await get(port, '/api/whoami', { ...alice, 'X-Forwarded-For': '203.0.113.9' })).status, 200)
      engine.setAccessLists({ deny: { addresses: ['203.0.113.0/24'], headers: { 'x-client': ['scraper'] } } })
      H.assertProblem(await get(port, '/api/whoami', { ...alice, 'X-Forwarded-For': '203.0.113.9' }), 403, 'access_denied')
      // A header the engine did not read before: the middleware hands it over now.
      H.assertProblem(await get(port, '/api/whoami', { ...alice, 'X-Client': 'scraper' }), 403, 'access_denied')
      assert.deepEqual(engine.accessLists().deny.addresses, ['203.0.113.0/24'])
      engine.setAccessLists({ allow: { subjects: ['alice'] } })
      const allowed = await times(USER_LIMIT + 1, () => get(port, '/api/whoami', alice))
      assert.deepEqual(allowed.map((r) => r.status), Array(USER_LIMIT + 1).fill(200))
      assert.equal(allowed[0].headers.ratelimit, undefined, 'an allowed caller skips the limits')
      assert.throws(() => engine.setAccessLists({ deny: { addresses: ['not an address'] } }),
        (error) => error instanceof FloodwallError && error.code === 'invalid_config' && error.field === 'deny.addresses[0]')
      assert.throws(() => engine.setAccessLists('deny all'), TypeError)
      assert.deepEqual(engine.accessLists().allow.subjects, ['alice'], 'a refused change keeps the lists in force')
    })
  })
})

describe('authenticate and rateLimit', () => {
  test('authenticate() alone hands over the identity and no decision', async () => {
    const engine = engineOf()
    await serving(H.makeApp([authenticate(engine)]), async (port) => {
      const response = await get(port, '/api/whoami', H.bearer(mint('alice', { role: 'premium' })))
      assert.equal(response.status, 200)
      assert.deepEqual(response.json(), {
        present: true, sameAsLocals: true, subject: 'alice', role: 'premium', rule: null, remaining: null, store: null, decision: false
      })
      assert.equal(response.headers.ratelimit, undefined)
      H.assertProblem(await get(port, '/api/whoami'), 401, 'missing_token')
      H.assertProblem(await get(port, '/api/whoami', H.bearer(mint('alice', { expiresIn: -3600 }))), 401, 'expired')
      const open = await get(port, '/public/info')
      assert.equal(open.status, 200)
      assert.equal(open.json().subject, null)
    })
  })

  test('composed, give the answers guard() gives', async () => {
    const cost = (req) => req.path === '/api/export' ? 2 : req.path === '/api/huge' ? 100 : 1
    const guarded = H.makeApp([guard(engineOf(), { cost })])
    const two = engineOf()
    const composed = H.makeApp([authenticate(two), rateLimit(two, { cost })])
    const alice = H.bearer(mint('alice'))
    const script = [
      ['/api/whoami', alice],
      ['/api/export', alice],
      ['/api/whoami', alice],
      ['/api/huge', H.bearer(mint('bob'))],
      ['/api/whoami', H.bearer(mint('bob', { role: 'premium' }))],
      ['/api/whoami', {}],
      ['/api/whoami', H.bearer(mint('bob', { secret: NEW_SECRET }))],
      ['/public/info', {}],
      ['/public/info', alice],
      ['/public/info', {}],
      ['/health', {}]
    ]
    const run = (app) => serving(app, (port) => times(script.length, async (i) => {
      const response = await get(port, script[i][0], script[i][1])
      return {
        status: response.status,
        body: response.json(),
        contentType: response.headers['content-type'],
        challenge: response.headers['www-authenticate'],
        policy: response.headers['ratelimit-policy'],
        state: response.headers.ratelimit,
        retryAfter: response.headers['retry-after']
      }
    }))
    const expected = await run(guarded)
    const actual = await run(composed)
    assert.deepEqual(actual, expected)
    assert.deepEqual(expected.map((r) => r.status), [200, 200, 429, 429, 200, 401, 401, 200, 200, 429, 200])
  })

  test('rules decided before the token run in authenticate(), once', async () => {
    const flood = { name: 'per-address', key: 'ip', algorithm: 'sliding_window', limit: 2, window: '1h', before_auth: true }
    const engine = engineOf({ extraRules: [flood] })
    await serving(H.makeApp([authenticate(engine), rateLimit(engine)]), async (port) => {
      const forged = H.bearer(mint('alice', { secret: NEW_SECRET }))
      const first = await get(port, '/api/whoami', forged)
      H.assertProblem(first, 401, 'bad_signature')
      assert.ok(first.headers.ratelimit.includes('"per-address";r=1;'), first.headers.ratelimit)
      const admitted = await get(port, '/api/whoami', H.bearer(mint('bob')))
      assert.equal(admitted.status, 200)
      // rateLimit() did not count the address rule again: it had one request left, not none.
      const flooded = await get(port, '/api/whoami', forged)
      assert.equal(H.assertProblem(flooded, 429, 'rate_limited').rule, 'per-address')
    })
  })

  test('rateLimit() alone keys header rules on the header, address rules on the address', async () => {
    const keyed = { name: 'per-key', match: { paths: ['/keyed'] }, key: 'header:X-Api-Key', algorithm: 'sliding_window', limit: 1, window: '1h' }
    const engine = engineOf({ auth: false, extraRules: [keyed] })
    await serving(H.makeApp([rateLimit(engine)]), async (port) => {
      const first = await get(port, '/keyed', { 'X-Api-Key': 'k1' })
      assert.equal(first.status, 200)
      assert.equal(first.json().rule, 'per-key')
      assert.equal(first.json().subject, null)
      assert.equal(H.assertProblem(await get(port, '/keyed', { 'x-api-key': 'k1' }), 429, 'rate_limited').rule, 'per-key')
      assert.equal((await get(port, '/keyed', { 'X-Api-Key': 'k2' })).status, 200)
      const codes = await times(PUBLIC_IP_LIMIT + 1, async () => (await get(port, '/public/info')).status)
      assert.deepEqual(codes, [...Array(PUBLIC_IP_LIMIT).fill(200), 429])
    })
  })
})

describe('options', () => {
  const engine = engineOf()
  const noAuth = engineOf({ auth: false })

  test('are checked when the middleware is built, naming the option', () => {
    const bad = [
      [() => guard({}), /engine must be a floodwall Engine/],
      [() => guard(engine, 'x'), /options must be an object/],
      [() => authenticate(engine, { cost: () => 1 }), /unknown option "cost"/],
      // What the engine's [http] section now says is no option of the middleware.
      [() => guard(engine, { publicPaths: ['/x'] }), /unknown option "publicPaths"/],
      [() => guard(engine, { skipPaths: ['/x'] }), /unknown option "skipPaths"/],
      [() => rateLimit(engine, { keyIp: () => null }), /unknown option "keyIp"/],
      [() => guard(engine, { headers: true }), /unknown option "headers"/],
      [() => guard(engine, { skip: true }), /skip option must be a function/],
      [() => guard(engine, { cost: 2 }), /cost option must be a function/],
      [() => guard(engine, { maxWait: -1 }), /maxWait option must be a number of milliseconds from 0 to 86400000, not number -1/],
      [() => rateLimit(engine, { maxWait: '1s' }), /maxWait option must be a number/],
      [() => guard(engine, { maxWait: Infinity }), /maxWait option must be a number/],
      [() => authenticate(engine, { maxWait: 10 }), /unknown option "maxWait"/],
      [() => guard(noAuth), /no \[auth\] section/],
      [() => authenticate(noAuth), /no \[auth\] section/],
      [() => proxy(engine, 'orders'), /no service "orders"/],
      [() => proxy(engine, ''), /service must be the name/],
      [() => proxy({}, 'orders'), /engine must be a floodwall Engine/]
    ]
    for (const [build, message] of bad) {
      assert.throws(build, (error) => error instanceof TypeError && message.test(error.message), String(message))
    }
    assert.equal(typeof rateLimit(noAuth), 'function', 'rateLimit needs no [auth]')
  })

  test('of proxy() are checked too', () => {
    const served = Engine.fromObject({ services: { orders: { upstreams: [{ url: 'http://127.0.0.1:9' }] } } })
    assert.throws(() => proxy(served, 'orders', { timeoutMs: 0 }), RangeError)
    assert.throws(() => proxy(served, 'orders', { timeoutMs: 2 ** 31 }), RangeError)
    assert.throws(() => proxy(served, 'orders', { timeoutMs: '5s' }), /timeoutMs option must be a number/)
    assert.throws(() => proxy(served, 'orders', { agent: {} }), /agent option must be an http.Agent/)
    assert.throws(() => proxy(served, 'orders', { httpsAgent: new http.Agent() }), /httpsAgent option must be an https.Agent/)
    assert.throws(() => proxy(served, 'orders', { xForwarded: 'yes' }), /xForwarded option must be true or false/)
    assert.throws(() => proxy(served, 'orders', { identityHeaders: 1 }), /identityHeaders option must be true or false/)
    assert.throws(() => proxy(served, 'orders', { retries: 2 }), /unknown option "retries"/)
    assert.equal(typeof proxy(served, 'orders', { timeoutMs: 250 }), 'function')
    assert.equal(require('floodwall/proxy').proxy, proxy, 'floodwall/proxy is the same proxy')
  })
})

describe('waiting for capacity (maxWait)', () => {
  /** One request a 250 ms bucket's turn, per client address. */
  const bucket = (store) => Engine.fromObject({
    ...(store ? { store } : {}),
    rules: [{ name: 'per-ip', key: 'ip', algorithm: 'token_bucket', capacity: 1, refill_rate: 4 }]
  })

  async function scenario (engine) {
    const waits = H.makeApp([rateLimit(engine, { maxWait: 2000 })])
    const answers = H.makeApp([rateLimit(engine, { maxWait: 50 })])
    await serving(waits, async (port) => {
      assert.equal((await get(port, '/api/whoami')).status, 200)
      const started = performance.now()
      const waited = await get(port, '/api/whoami')
      const ms = performance.now() - started
      assert.equal(waited.status, 200, waited.text)
      // The bucket's next token comes 250 ms after the first was taken.
      assert.ok(ms >= 150, `answered after ${ms} ms`)
      assert.deepEqual([waited.headers['ratelimit-policy'], waited.headers['ratelimit-remaining']], ['"per-ip";q=1;w=1', '0'])
    })
    // A wait longer than the budget: answered 429 at once, and recorded.
    await serving(answers, async (port) => {
      H.assertProblem(await get(port, '/api/whoami'), 429, 'rate_limited')
    })
    const totals = engine.report().totals
    // The waited-out refusal is not recorded; the answered one is.
    assert.deepEqual([totals.requests, totals.admitted, totals.rate_limited], [3, 2, 1])
  }

  test('on the memory store: a 429 within the budget is waited out on a timer, one past it answered', async () => {
    await scenario(bucket())
  })

  test('on Redis: the same, decided on the worker threads', async () => {
    const server = await RedisServer.start()
    try {
      const engine = bucket(redisStore(server))
      assert.equal(engine.mayWait, true)
      await scenario(engine)
    } finally {
      await server.stop()
    }
  })

  test('a client that goes away while waiting is dropped, and nothing is recorded for it', async () => {
    const engine = bucket()
    const app = H.makeApp([rateLimit(engine, { maxWait: 5000 })])
    await serving(app, async (port) => {
      assert.equal((await get(port, '/api/whoami')).status, 200)
      await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/api/whoami' })
        req.on('error', () => resolve())
        setTimeout(() => { req.destroy(); resolve() }, 50)
      })
      // Past the 250 ms the dropped request would have waited.
      await new Promise((resolve) => setTimeout(resolve, 400))
      const totals = engine.report().totals
      assert.deepEqual([totals.requests, totals.admitted, totals.rate_limited, totals.responses], [1, 1, 0, 1])
    })
  })
})

/** Two upstream servers (a, b) and an engine with service `orders` over them. */
async function withUpstreams (fn, { breaker, modes = ['ok', 'ok'], auth = false, urls } = {}) {
  const a = await H.startUpstream('a', modes[0])
  const b = await H.startUpstream('b', modes[1])
  const agent = new http.Agent({ keepAlive: true })
  try {
    const engine = H.engineOf({
      auth,
      services: {
        orders: {
          strategy: 'round_robin',
          upstreams: [{ name: 'a', url: urls ? urls[0] : a.url }, { name: 'b', url: urls ? urls[1] : b.url }],
          breaker: breaker || { window: 10, min_calls: 2, failure_rate: 0.5, open_for: '5m' }
        }
      }
    })
    return await fn({ a, b, engine, agent })
  } finally {
    agent.destroy()
    await a.close()
    await b.close()
  }
}

const stats = (engine, service = 'orders') =>
  Object.fromEntries(engine.upstreams(service).map((u) => [u.name, u]))

describe('proxy', () => {
  test('spreads calls round robin over both upstreams and forwards what it should', async () => {
    await withUpstreams(async ({ a, b, engine }) => {
      const app = express()
      app.use('/orders', proxy(engine, 'orders')) // the default keep-alive agent
      await serving(app, async (port) => {
        const responses = await times(6, () => get(port, '/orders/items/7?expand=1&x=%20', [
          ['Connection', 'X-Secret'],
          ['X-Secret', 'not for the upstream'],
          ['Proxy-Authorization', 'Basic c2VjcmV0'],
          ['X-Forwarded-For', '198.51.100.7'],
          ['X-Forwarded-Host', 'spoofed.example'],
          ['Authorization', 'Bearer passed-on']
        ]))
        assert.deepEqual(responses.map((r) => r.status), Array(6).fill(200))
        assert.equal(a.hits, 3)
        assert.equal(b.hits, 3)
        assert.deepEqual(new Set(responses.map((r) => r.headers['x-upstream'])), new Set(['a', 'b']))
        const s = stats(engine)
        for (const name of ['a', 'b']) {
          assert.equal(s[name].calls, 3)
          assert.equal(s[name].successes, 3)
          assert.equal(s[name].inFlight, 0)
          assert.equal(s[name].state, 'closed')
        }

        const seen = responses[0].json()
        const upstream = seen.upstream === 'a' ? a : b
        assert.equal(seen.method, 'GET')
        assert.equal(seen.url, '/orders/items/7?expand=1&x=%20')
        assert.equal(seen.headers.host, `127.0.0.1:${upstream.port}`)
        assert.equal(seen.headers['x-forwarded-for'], '198.51.100.7, 127.0.0.1')
        assert.equal(seen.headers['x-forwarded-proto'], 'http')
        assert.equal(seen.headers['x-forwarded-host'], `127.0.0.1:${port}`)
        assert.equal(seen.headers.authorization, 'Bearer passed-on')
        assert.equal(seen.headers['x-secret'], undefined)
        assert.equal(seen.headers['proxy-authorization'], undefined)

        // The answer: its status, its headers (a repeated one kept, hop-by-hop ones dropped).
        const answer = responses[0]
        assert.equal(answer.headers['content-type'], 'application/json')
        assert.deepEqual(answer.headers['set-cookie'], ['a=1', 'b=2'])
        assert.equal(answer.headers['x-hop'], undefined)
        assert.ok(!/x-hop/i.test(answer.headers.connection || ''), answer.headers.connection)
      })
    })
  })

  test('stops sending to an upstream whose breaker opened on its 500s', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      const app = express()
      app.use('/orders', proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        const responses = await times(10, () => get(port, '/orders/list'))
        const statuses = responses.map((r) => r.status)
        assert.equal(b.hits, 2, 'min_calls 2 at a failure rate of 1: open after its second call')
        assert.equal(a.hits, 8)
        assert.equal(statuses.filter((s) => s === 500).length, 2)
        const lastFailure = statuses.lastIndexOf(500)
        for (const response of responses.slice(lastFailure + 1)) {
          assert.equal(response.status, 200)
          assert.equal(response.headers['x-upstream'], 'a')
        }
        // The upstream's 500 answer itself reached the client.
        assert.equal(responses[lastFailure].json().failing, true)

        const events = engine.breakerEvents()
        assert.ok(events.some((e) => e.service === 'orders' && e.upstream === 'b' && e.from === 'closed' && e.to === 'open'), JSON.stringify(events))
        assert.ok(!events.some((e) => e.upstream === 'a'))
        const s = stats(engine)
        assert.equal(s.b.state, 'open')
        assert.equal(s.b.failures, 2)
        assert.equal(s.a.successes, 8)
        assert.equal(s.a.inFlight + s.b.inFlight, 0)
      })
    }, { modes: ['ok', 'fail'] })
  })

  test('answers 502 for an unreachable upstream, then 503 with Retry-After once all are open', async () => {
    const closed = [await freePort(), await freePort()].map((p) => `http://127.0.0.1:${p}`)
    await withUpstreams(async ({ a, b, engine, agent }) => {
      const app = express()
      app.use(proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        const unreachable = await times(4, () => get(port, '/list'))
        for (const response of unreachable) H.assertProblem(response, 502, 'bad_gateway')
        const s = stats(engine)
        assert.equal(s.a.failures, 2)
        assert.equal(s.b.failures, 2)
        assert.equal(s.a.state, 'open')
        assert.equal(s.b.state, 'open')

        const unavailable = await get(port, '/list')
        const body = H.assertProblem(unavailable, 503, 'no_upstream_available')
        assert.equal(body.title, 'Service Unavailable')
        const retryAfter = Number(unavailable.headers['retry-after'])
        assert.ok(retryAfter >= 1 && retryAfter <= 3600, String(retryAfter))
        assert.equal(body.retry_after, retryAfter)
        assert.equal(a.hits + b.hits, 0)
      })
    }, { urls: closed })
  })

  test('answers 503 without Retry-After when every upstream is marked down', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      engine.setUpstreamDown('orders', 'a')
      engine.setUpstreamDown('orders', 'b')
      const app = express()
      app.use(proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        const response = await get(port, '/list')
        H.assertProblem(response, 503, 'no_upstream_available')
        assert.equal(response.headers['retry-after'], undefined)
        assert.equal(a.hits + b.hits, 0)
      })
    })
  })

  test('answers 504 when the upstream hangs, and finishes the lease as a timeout', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      engine.setUpstreamDown('orders', 'b')
      const app = express()
      app.use(proxy(engine, 'orders', { agent, timeoutMs: 150 }))
      await serving(app, async (port) => {
        const response = await get(port, '/slow')
        H.assertProblem(response, 504, 'upstream_timeout')
        assert.ok(a.hits <= 1)
        const s = stats(engine)
        assert.equal(s.a.calls, 1)
        assert.equal(s.a.timeouts, 1)
        assert.equal(s.a.successes + s.a.failures, 0)
        assert.equal(s.a.inFlight, 0)
      })
    }, { modes: ['hang', 'ok'] })
  })

  test('streams request and response bodies through', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      const app = express()
      app.use(proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        const chunks = Array.from({ length: 64 }, () => crypto.randomBytes(16 * 1024))
        const sent = Buffer.concat(chunks)
        const echoed = await H.request(port, { method: 'POST', path: '/echo', headers: { 'Content-Type': 'application/x-test' }, body: chunks })
        assert.equal(echoed.status, 200)
        assert.equal(echoed.headers['content-type'], 'application/x-test')
        assert.ok(echoed.buffer.equals(sent), `echoed ${echoed.buffer.length} of ${sent.length} bytes`)

        const body = crypto.randomBytes(100_000)
        const described = await H.request(port, { method: 'PUT', path: '/orders/1', headers: { 'Content-Length': String(body.length) }, body })
        assert.equal(described.status, 200)
        const seen = described.json()
        assert.equal(seen.method, 'PUT')
        assert.equal(seen.bodyLength, body.length)
        assert.equal(seen.bodySha256, crypto.createHash('sha256').update(body).digest('hex'))
        assert.equal(seen.headers['content-length'], String(body.length))
        const s = stats(engine)
        assert.equal(s.a.successes + s.b.successes, 2)
        assert.equal(s.a.inFlight + s.b.inFlight, 0)
      })
    })
  })

  test('refuses a body a body parser already read, before picking an upstream', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      const app = express()
      app.use(express.json())
      app.use(proxy(engine, 'orders', { agent }))
      app.use((error, req, res, next) => res.status(500).json({ message: error.message }))
      await serving(app, async (port) => {
        const response = await H.request(port, { method: 'POST', path: '/orders', headers: { 'Content-Type': 'application/json' }, body: '{"a":1}' })
        assert.equal(response.status, 500)
        assert.match(response.json().message, /body parser/)
        assert.equal(a.hits + b.hits, 0)
        assert.equal(stats(engine).a.calls + stats(engine).b.calls, 0)
      })
    })
  })

  test('finishes the lease once when the client goes away before the answer', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      engine.setUpstreamDown('orders', 'b')
      const app = express()
      app.use(proxy(engine, 'orders', { agent, timeoutMs: 60_000 }))
      await serving(app, async (port) => {
        const socket = net.createConnection({ host: H.HOST, port })
        socket.on('error', () => {})
        socket.write(`GET /wait HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
        assert.ok(await waitUntil(() => a.hits === 1), 'the upstream got the call')
        assert.equal(stats(engine).a.inFlight, 1)
        socket.destroy()
        assert.ok(await waitUntil(() => stats(engine).a.inFlight === 0), 'the lease was finished')
        const s = stats(engine).a
        assert.equal(s.calls, 1)
        assert.equal(s.successes, 1, 'a client leaving says nothing against the upstream')
        assert.equal(s.failures + s.timeouts, 0)
      })
    }, { modes: ['hang', 'ok'] })
  })

  test('records a failure when the upstream breaks off its body, and drops the client', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      engine.setUpstreamDown('orders', 'b')
      const app = express()
      app.use(proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        await assert.rejects(get(port, '/partial'), /broke off|aborted|socket hang up|ECONNRESET/)
        assert.ok(await waitUntil(() => stats(engine).a.calls === 1), 'the call was recorded')
        const s = stats(engine).a
        assert.equal(s.failures, 1)
        assert.equal(s.inFlight, 0)
      })
    }, { modes: ['break', 'ok'] })
  })

  test('behind guard(): no token never reaches an upstream; an admitted call does, with its headers', async () => {
    await withUpstreams(async ({ a, b, engine, agent }) => {
      const app = express()
      app.use(guard(engine))
      app.use('/api/orders', proxy(engine, 'orders', { agent }))
      await serving(app, async (port) => {
        H.assertProblem(await get(port, '/api/orders/1'), 401, 'missing_token')
        assert.equal(a.hits + b.hits, 0)
        const alice = H.bearer(mint('alice'))
        const admitted = await get(port, '/api/orders/1', alice)
        assert.equal(admitted.status, 200)
        assert.equal(admitted.json().url, '/api/orders/1')
        assert.ok(admitted.json().headers.authorization.startsWith('Bearer '))
        H.assertRateLimitHeaders(admitted, { rule: 'per-user', limit: USER_LIMIT, remaining: 2 })
        await times(2, () => get(port, '/api/orders/1', alice))
        H.assertProblem(await get(port, '/api/orders/1', alice), 429, 'rate_limited')
        assert.equal(a.hits + b.hits, USER_LIMIT)
      })
    }, { auth: true })
  })
})

describe('monitoring', () => {
  test('the engine records every response once, with the status the client got', async () => {
    const engine = engineOf()
    const alice = H.bearer(mint('alice'))
    const requests = [
      ['/api/whoami?verbose=1', alice, 200],
      ['/api/whoami', alice, 200],
      ['/api/own-header', alice, 200],
      ['/api/whoami', alice, 429], // the limit, answered by guard
      ['/api/whoami', {}, 401], // no token
      ['/api/whoami', H.bearer(mint('eve', { secret: NEW_SECRET })), 401],
      ['/api/huge', H.bearer(mint('bob')), 429], // costs more than any limit
      ['/api/nowhere', H.bearer(mint('carol')), 404], // Express's answer
      ['/api/%C3%A9t%C3%A9', H.bearer(mint('frank')), 404],
      ['/api/boom', H.bearer(mint('dave')), 500], // the error handler's answer
      ['/public/info?page=2', {}, 200],
      ['/health', {}, 200] // skipped: not recorded
    ]
    const cost = (req) => (req.path === '/api/huge' ? 100 : 1)
    await serving(H.makeApp([guard(engine, { cost })]), async (port) => {
      const statuses = await times(requests.length, async (i) => (await get(port, requests[i][0], requests[i][1])).status)
      assert.deepEqual(statuses, requests.map(([, , status]) => status))
      assert.ok(await waitUntil(() => H.responsesOf(engine).count >= requests.length - 1), JSON.stringify(H.responsesOf(engine)))
    })
    const { count, classes } = H.responsesOf(engine)
    assert.equal(count, requests.length - 1)
    assert.deepEqual(classes, { '2xx': 4, '4xx': 6, '5xx': 1 })
    const endpoints = Object.fromEntries(engine.report().top_endpoints.map((e) => [e.key, e.count]))
    assert.equal(endpoints['GET /api/whoami'], 5, 'decisions are recorded under the normal path')
    assert.equal(endpoints['GET /health'], undefined, 'a skipped request is not recorded')
  })

  test('when several middlewares see a request, it is recorded once', async () => {
    const engine = engineOf()
    const alice = H.bearer(mint('alice'))
    // authenticate answers the 401, rateLimit the 429, the route the 200s; guard behind them
    // decides again (and answers a 429 of its own once its limit is spent).
    const app = H.makeApp([authenticate(engine), rateLimit(engine), guard(engine)])
    await serving(app, async (port) => {
      const statuses = [
        (await get(port, '/api/whoami')).status,
        (await get(port, '/api/whoami', alice)).status,
        (await get(port, '/api/whoami', alice)).status
      ]
      assert.deepEqual(statuses, [401, 200, 429])
      assert.ok(await waitUntil(() => H.responsesOf(engine).count >= 3))
    })
    assert.deepEqual(H.responsesOf(engine).classes, { '2xx': 1, '4xx': 2 })
    assert.equal(H.responsesOf(engine).count, 3)
  })

  test('a streamed answer is recorded when it finishes, its time counted from the middleware', async () => {
    const engine = engineOf()
    await serving(H.makeApp([guard(engine)]), async (port) => {
      const response = await get(port, '/api/slow', H.bearer(mint('alice')))
      assert.deepEqual([response.status, response.text], [200, 'one,two'])
      assert.ok(await waitUntil(() => H.responsesOf(engine).count >= 1))
    })
    const { count, maxLatencyUs } = H.responsesOf(engine)
    assert.equal(count, 1)
    // Node's timers may fire up to a millisecond before the engine's clock says they should.
    assert.ok(maxLatencyUs >= (H.SLOW_PAUSE_MS - 2) * 1000, `${maxLatencyUs} µs`)
  })

  test('the 503 of a proxy behind guard is recorded', async () => {
    const engine = engineOf({ services: { orders: { upstreams: [{ name: 'a', url: 'http://127.0.0.1:9' }] } } })
    engine.setUpstreamDown('orders', 'a')
    const app = express()
    app.use(guard(engine))
    app.use('/api/orders', proxy(engine, 'orders'))
    await serving(app, async (port) => {
      H.assertProblem(await get(port, '/api/orders/7', H.bearer(mint('alice'))), 503, 'no_upstream_available')
      assert.ok(await waitUntil(() => H.responsesOf(engine).count >= 1))
    })
    assert.deepEqual(H.responsesOf(engine).classes, { '5xx': 1 })
  })

  test('a rule that counts only failures gives back what the application answered well', async () => {
    const failures = { name: 'failures', match: { paths: ['/api/**'] }, key: 'subject', algorithm: 'sliding_window', limit: 2, window: '1h', count_responses: 'failed' }
    const engine = engineOf({ extraRules: [failures] })
    await serving(H.makeApp([guard(engine)]), async (port) => {
      const bob = H.bearer(mint('bob', { role: 'premium' }))
      const fine = await times(3, () => get(port, '/api/whoami', bob))
      assert.deepEqual(fine.map((r) => r.status), [200, 200, 200])
      assert.ok(fine[2].headers.ratelimit.includes('"failures";r=1;'), 'the earlier successes were given back')
      assert.deepEqual([(await get(port, '/api/boom', bob)).status, (await get(port, '/api/boom', bob)).status], [500, 500])
      H.assertProblem(await get(port, '/api/whoami', bob), 429, 'rate_limited')
    })
  })

  test('metrics answers the Prometheus text with its content type', async () => {
    const engine = engineOf()
    engine.checkSync({ subject: 'alice', method: 'GET', path: '/api/orders' })
    const app = express()
    app.get('/metrics', metrics(engine))
    app.head('/metrics', metrics(engine))
    await serving(app, async (port) => {
      const response = await get(port, '/metrics')
      assert.equal(response.status, 200)
      assert.equal(response.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
      assert.equal(response.headers['cache-control'], 'no-store')
      assert.equal(Number(response.headers['content-length']), response.buffer.length)
      assert.ok(response.text.split('\n').includes('floodwall_decisions_total{outcome="admitted"} 1'), response.text)
      const head = await H.request(port, { method: 'HEAD', path: '/metrics' })
      assert.deepEqual([head.status, head.text], [200, ''])
    })
    assert.throws(() => metrics({}), /metrics\(\): engine must be a floodwall Engine/)
  })
})

describe('on Redis', () => {
  // One engine for both scenarios (one Redis server, one engine: as a deployment has it).
  test('guard, and authenticate() + rateLimit(), enforce the limits with the store named redis', async () => {
    const server = await RedisServer.start()
    try {
      const store = redisStore(server)
      const engine = engineOf({ store })
      assert.equal(engine.mayWait, true)
      await serving(H.makeApp([guard(engine)]), async (port) => {
        const alice = H.bearer(mint('alice'))
        const admitted = await times(USER_LIMIT, () => get(port, '/api/whoami', alice))
        const denied = await get(port, '/api/whoami', alice)
        const other = await get(port, '/api/whoami', H.bearer(mint('bob')))
        const missing = await get(port, '/api/whoami')
        const open = await times(PUBLIC_IP_LIMIT + 1, async () => (await get(port, '/public/info')).status)

        assert.deepEqual(admitted.map((r) => r.status), Array(USER_LIMIT).fill(200))
        assert.equal(admitted[0].json().store, 'redis')
        H.assertRateLimitHeaders(admitted[0], { rule: 'per-user', limit: USER_LIMIT, remaining: 2 })
        assert.equal(H.assertProblem(denied, 429, 'rate_limited').rule, 'per-user')
        H.assertRateLimitHeaders(denied, { rule: 'per-user', limit: USER_LIMIT, remaining: 0 })
        assert.equal(denied.headers['retry-after'], '3600')
        assert.equal(other.status, 200)
        H.assertProblem(missing, 401, 'missing_token')
        assert.deepEqual(open, [...Array(PUBLIC_IP_LIMIT).fill(200), 429])
      })

      await serving(H.makeApp([authenticate(engine), rateLimit(engine)]), async (port) => {
        const carol = H.bearer(mint('carol', { role: 'premium' }))
        const codes = await times(PREMIUM_LIMIT + 1, async () => (await get(port, '/api/whoami', carol)).status)
        assert.deepEqual(codes, [...Array(PREMIUM_LIMIT).fill(200), 429])
        // alice's budget, spent through guard(), is spent here too: one store.
        H.assertProblem(await get(port, '/api/whoami', H.bearer(mint('alice'))), 429, 'rate_limited')
        const admitted = await get(port, '/api/whoami', H.bearer(mint('dave')))
        assert.equal(admitted.json().store, 'redis')
        assert.equal(admitted.json().subject, 'dave')
        H.assertRateLimitHeaders(admitted, { rule: 'per-user', limit: USER_LIMIT, remaining: 2 })
      })

      // The limiter state is in Redis, under the engine's prefix, expiring within the hour.
      const keys = await server.command('KEYS', `${store.prefix}*`)
      assert.ok(Array.isArray(keys) && keys.length > 0, JSON.stringify(keys))
      for (const key of keys) {
        const ttl = await server.command('TTL', key)
        assert.ok(ttl > 0 && ttl <= 3600, `${key}: ${ttl}`)
      }
    } finally {
      await server.stop()
    }
  })
})
