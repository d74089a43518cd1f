'use strict'
/**
 * The errors: every `ERROR_CODES` kind provoked for real through the API, as a
 * `FloodwallError` (an `Error`) with its `code`, HTTP `status` and the kind's extra property
 * (`field`, `wwwAuthenticate`, `availableAtMs`); bad arguments as `TypeError`s; and the sync
 * calls refusing a Redis engine rather than block the event loop.
 */

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')

const {
  floodwall, CHALLENGES, JWT_FIXTURES, loadJwtCases, fixtureEngine, mint, hs256Auth
} = require('./helpers.js')
const { freePort } = require('./redis_server.js')

const { Engine, Decision, FloodwallError, ERROR_CODES } = floodwall

const JWT = loadJwtCases()
const NOW_MS = JWT.now * 1000
const AUTH_CODES = ERROR_CODES.filter((code) => code in CHALLENGES)

/** code → the HTTP status its errors carry. */
const STATUS = {
  invalid_config: 503,
  cost_exceeds_limit: 429,
  invalid_cost: 400,
  ...Object.fromEntries(AUTH_CODES.map((code) => [code, 401])),
  no_upstream_available: 503,
  unknown_rule: 503,
  unknown_service: 503,
  unknown_upstream: 503,
  store_unavailable: 503
}

const PER_USER = {
  rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 2, window: '1m' }]
}

const SERVICE = {
  services: {
    api: {
      upstreams: [{ name: 'a', url: 'http://127.0.0.1:9001' }],
      breaker: { window: 10, min_calls: 2, failure_rate: 0.5, open_for: '5m' }
    }
  }
}

/** Asserts `error` is the FloodwallError of `code`, with the properties every one has. */
function assertError (error, code) {
  assert.ok(error instanceof FloodwallError, `${code}: a ${error && error.constructor && error.constructor.name}: ${error && error.message}`)
  assert.ok(error instanceof Error)
  assert.equal(error.name, 'FloodwallError')
  assert.equal(error.code, code)
  assert.equal(error.status, STATUS[code], code)
  assert.equal(typeof error.message, 'string')
  assert.ok(error.message.length > 0)
  assert.ok(!error.message.startsWith('{'), 'the message is the text, not the native JSON')
  assert.equal(typeof error.stack, 'string')
  if (code !== 'invalid_config') assert.equal(error.field, null, `${code}: field`)
  if (!(code in CHALLENGES)) assert.equal(error.wwwAuthenticate, null, `${code}: wwwAuthenticate`)
  if (code !== 'no_upstream_available') assert.equal(error.availableAtMs, null, `${code}: availableAtMs`)
}

/** The error `fn` throws (it must throw). */
function thrown (fn) {
  try {
    fn()
  } catch (error) {
    return error
  }
  assert.fail('did not throw')
}

/** The reason `promise` rejects with (it must reject). */
async function rejection (promise) {
  assert.ok(promise instanceof Promise, 'a Promise')
  try {
    await promise
  } catch (error) {
    return error
  }
  assert.fail('did not reject')
}

// --- the codes -------------------------------------------------------------------------------

test('ERROR_CODES: the core kinds, unique, frozen, each with a status here', () => {
  assert.ok(Array.isArray(ERROR_CODES))
  assert.ok(Object.isFrozen(ERROR_CODES))
  assert.equal(ERROR_CODES.length, 20)
  assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length)
  assert.deepEqual([...ERROR_CODES].sort(), Object.keys(STATUS).sort(), 'a kind this test does not know')
  assert.throws(() => { 'use strict'; ERROR_CODES.push('x') }, TypeError)
})

test('the auth kinds are the ones the JWT fixtures cover', () => {
  assert.deepEqual([...AUTH_CODES].sort(), [...JWT.error_kinds].sort())
})

test('a FloodwallError built by hand keeps its details', () => {
  const error = new FloodwallError('x', { code: 'no_upstream_available', status: 503, availableAtMs: 7 })
  assert.ok(error instanceof Error)
  assert.equal(error.message, 'x')
  assert.equal(error.availableAtMs, 7)
  assert.equal(error.field, null)
  assert.equal(error.wwwAuthenticate, null)
})

// --- invalid_config --------------------------------------------------------------------------

describe('invalid_config names the field', () => {
  const cases = [
    ['bad-value', { rules: [{ name: 'r', key: 'subject', algorithm: 'token_bucket', capacity: 5, refill_rate: -2 }] }, 'rules[0].refill_rate'],
    ['unknown-field', { rules: [{ name: 'r', key: 'subject', algorithm: 'fixed_window', limit: 1, window: '1m', bogus: 1 }] }, 'rules[0].bogus'],
    ['unknown-store', { store: { kind: 'memcached' } }, 'store.kind'],
    ['bad-weight', { services: { api: { upstreams: [{ url: 'http://a', weight: 0 }] } } }, 'services.api.upstreams[0].weight'],
    ['rules-not-a-list', { rules: 'nope' }, 'rules']
  ]
  for (const [name, config, field] of cases) {
    test(name, () => {
      for (const build of [() => Engine.fromObject(config), () => Engine.fromJson(JSON.stringify(config))]) {
        const error = thrown(build)
        assertError(error, 'invalid_config')
        assert.equal(error.field, field)
        assert.ok(error.message.startsWith(`${field}: `), error.message)
      }
    })
  }
})

test('invalid_config from every source', () => {
  for (const build of [
    () => Engine.fromToml('rules = 5'),
    () => Engine.fromToml('[[rules]\n'),
    () => Engine.fromJson('{not json'),
    () => Engine.fromJson('[]'),
    () => Engine.fromJson('null'),
    () => Engine.fromFile(path.join(JWT_FIXTURES, 'no-such-file.toml')),
    () => Engine.fromObject({ rules: [{ name: 'r', key: 'subject', algorithm: 'fixed_window', limit: 0, window: '1m' }] })
  ]) {
    assertError(thrown(build), 'invalid_config')
  }
})

test('fromObject names the field\'s path, never a position in JSON the caller did not write', () => {
  const cases = [
    [{ rules: [{ name: 'r', key: 'ip', algorithm: 'fixed_window', limit: 'ten', window: '1s' }] }, 'rules[0].limit'],
    [{ rules: [{ name: 'r', key: 'ip', algorithm: 'fixed_window', limit: -5, window: '1s' }] }, 'rules[0].limit'],
    [{ http: { trusted_proxies: ['10.0.0.0/8', 'everyone'] } }, 'http.trusted_proxies[1]'],
    [{ store: { kind: 'redis', url: 'localhost:6379' } }, 'store.url']
  ]
  for (const [config, field] of cases) {
    const error = thrown(() => Engine.fromObject(config))
    assertError(error, 'invalid_config')
    assert.equal(error.field, field, error.message)
    assert.doesNotMatch(error.message, /line \d+|column \d+/, error.message)
  }
  assert.match(thrown(() => Engine.fromObject(cases[1][0])).message, /must be a whole number of 0 or more, got -5/)
  assert.throws(() => Engine.fromObject({ a: 1n }), TypeError, 'a value JSON cannot hold')
})

test('authenticating without an [auth] section is invalid_config on field auth', async () => {
  const engine = Engine.fromObject(PER_USER)
  assert.equal(engine.hasAuth, false)
  for (const call of [() => engine.authenticate(mint()), () => engine.authorizeSync(mint())]) {
    const error = thrown(call)
    assertError(error, 'invalid_config')
    assert.equal(error.field, 'auth')
  }
  const error = await rejection(engine.authorize(mint()))
  assertError(error, 'invalid_config')
  assert.equal(error.field, 'auth')
})

test('a secret_env that is not set is invalid_config naming the variable', () => {
  const saved = process.env.FLOODWALL_TEST_HMAC_SECRET
  delete process.env.FLOODWALL_TEST_HMAC_SECRET
  try {
    const error = thrown(() => Engine.fromFile(path.join(JWT_FIXTURES, 'floodwall.toml')))
    assertError(error, 'invalid_config')
    assert.ok(error.field && error.field.endsWith('.secret_env'), error.field)
    assert.match(error.message, /FLOODWALL_TEST_HMAC_SECRET/)
  } finally {
    if (saved !== undefined) process.env.FLOODWALL_TEST_HMAC_SECRET = saved
  }
})

// --- cost_exceeds_limit ----------------------------------------------------------------------

test('cost_exceeds_limit: 429, consumes nothing, from every check route', async () => {
  const engine = Engine.fromObject(PER_USER)
  const error = thrown(() => engine.checkSync({ subject: 'alice', cost: 3, nowMs: 1_000 }))
  assertError(error, 'cost_exceeds_limit')
  assert.match(error.message, /per-user/)
  assertError(await rejection(engine.check({ subject: 'alice', cost: 3, nowMs: 1_000 })), 'cost_exceeds_limit')
  const [fromBatch] = engine.checkManySync([{ subject: 'alice', cost: 3, nowMs: 1_000 }])
  assertError(fromBatch, 'cost_exceeds_limit')
  assert.equal(engine.checkSync({ subject: 'alice', cost: 2, nowMs: 1_000 }).remaining, 0, 'nothing was consumed')
})

// --- authentication kinds --------------------------------------------------------------------

describe('each auth kind from a fixture token', () => {
  const engine = fixtureEngine(JWT)
  for (const code of AUTH_CODES) {
    test(code, () => {
      const c = JWT.cases.find((x) => x.expect.error === code)
      assert.ok(c, `no fixture case for ${code}`)
      const error = thrown(() => engine.authenticate('Bearer ' + c.token, { nowMs: NOW_MS }))
      assertError(error, code)
      assert.equal(error.wwwAuthenticate, CHALLENGES[code])
      // authorizeSync refuses it too. It judges the token at the engine's clock, not the
      // fixtures' fixed time, so the kind may differ (an `iat` in the future …); it is one of
      // the auth kinds, with its challenge.
      const again = thrown(() => engine.authorizeSync('Bearer ' + c.token, { nowMs: NOW_MS }))
      assert.ok(AUTH_CODES.includes(again.code), again.code)
      assertError(again, again.code)
      assert.equal(again.wwwAuthenticate, CHALLENGES[again.code])
    })
  }
})

test('auth errors from minted tokens', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  for (const [authorization, code] of [
    ['', 'missing_token'],
    ['Basic dXNlcjpwYXNz', 'missing_token'],
    [mint('alice', { expiresIn: -3600 }), 'expired'],
    [mint('alice', { secret: 'another-secret-of-the-same-length-0123456789' }), 'bad_signature'],
    [mint('alice', { expiresIn: null }), 'missing_claim'],
    [mint(null), 'missing_claim'],
    ['Bearer not.a.jwt', 'malformed_token']
  ]) {
    const error = thrown(() => engine.authenticate(authorization))
    assertError(error, code)
    assert.equal(error.wwwAuthenticate, CHALLENGES[code])
    const token = authorization.replace(/^Bearer /, '')
    if (token) assert.ok(!error.wwwAuthenticate.includes(token), 'the token is not echoed')
  }
})

// --- balancing -------------------------------------------------------------------------------

test('no_upstream_available says when the breaker lets a call through again', () => {
  const engine = Engine.fromObject(SERVICE)
  for (let i = 0; i < 2; i++) engine.pick('api').finish('failure')
  const error = thrown(() => engine.pick('api'))
  assertError(error, 'no_upstream_available')
  const [status] = engine.upstreams('api')
  assert.equal(status.state, 'open')
  assert.equal(typeof error.availableAtMs, 'number')
  assert.equal(error.availableAtMs, status.openUntilMs)
})

test('no_upstream_available when every upstream is down: no availableAtMs', () => {
  const engine = Engine.fromObject(SERVICE)
  engine.setUpstreamDown('api', 'a')
  const error = thrown(() => engine.pick('api'))
  assertError(error, 'no_upstream_available')
  assert.equal(error.availableAtMs, null)
  assert.match(error.message, /marked down/)
})

test('unknown_service from every service method', () => {
  const engine = Engine.fromObject(SERVICE)
  for (const call of [
    () => engine.pick('nope'),
    () => engine.upstreams('nope'),
    () => engine.setUpstreamDown('nope', 'a'),
    () => engine.resetBreaker('nope', 'a'),
    () => engine.addUpstream('nope', 'http://b'),
    () => engine.removeUpstream('nope', 'a')
  ]) {
    const error = thrown(call)
    assertError(error, 'unknown_service')
    assert.match(error.message, /nope/)
  }
})

test('unknown_upstream from every upstream method', () => {
  const engine = Engine.fromObject(SERVICE)
  for (const call of [
    () => engine.setUpstreamDown('api', 'zz'),
    () => engine.resetBreaker('api', 'zz'),
    () => engine.removeUpstream('api', 'zz')
  ]) {
    const error = thrown(call)
    assertError(error, 'unknown_upstream')
    assert.match(error.message, /zz/)
  }
})

// --- store_unavailable -----------------------------------------------------------------------

test('store_unavailable under on_error = "error" with an unreachable Redis', async () => {
  const port = await freePort()
  const engine = Engine.fromObject({
    store: { kind: 'redis', url: `redis://127.0.0.1:${port}`, timeout: '200ms', on_error: 'error' },
    auth: hs256Auth(),
    ...PER_USER
  })
  assert.equal(engine.mayWait, true)
  const error = await rejection(engine.check({ subject: 'alice' }))
  assertError(error, 'store_unavailable')
  assert.match(error.message, /unavailable/)

  const batch = await engine.checkMany([{ subject: 'alice' }, { subject: 'bob' }])
  assert.equal(batch.length, 2)
  for (const item of batch) assertError(item, 'store_unavailable')

  assertError(await rejection(engine.authorize(mint('alice'))), 'store_unavailable')
  assert.equal(typeof engine.storeFailure, 'string')
})

// --- the sync calls refuse a Redis engine ----------------------------------------------------

test('checkSync, checkManySync and authorizeSync refuse a Redis engine instead of blocking', async () => {
  // An unreachable Redis under on_error = "allow": a call that went to the store would
  // answer an `unavailable` Decision; the refusal is an error before any store call.
  const port = await freePort()
  const engine = Engine.fromObject({
    store: { kind: 'redis', url: `redis://127.0.0.1:${port}`, timeout: '200ms', on_error: 'allow' },
    auth: hs256Auth(),
    ...PER_USER
  })
  assert.equal(engine.storeKind, 'redis')
  // The engine tried Redis once, when it was built, and started failing.
  const before = engine.storeHealth
  assert.equal(before.state, 'failing')
  for (const call of [
    () => engine.checkSync({ subject: 'alice' }),
    () => engine.checkSync(),
    () => engine.checkManySync([{ subject: 'alice' }]),
    () => engine.authorizeSync(mint('alice'))
  ]) {
    const error = thrown(call)
    assertError(error, 'invalid_config')
    assert.equal(error.field, 'store.kind')
    assert.match(error.message, /Promise/)
  }
  assert.deepEqual(engine.storeHealth, before, 'no call reached the store')
  const decision = await engine.check({ subject: 'alice' })
  assert.ok(decision instanceof Decision)
  assert.equal(decision.store, 'unavailable')
})

// --- bad arguments ---------------------------------------------------------------------------

const BAD_REQUESTS = [
  ['subject: 5', { subject: 5 }],
  ['role: Buffer', { role: Buffer.from('admin') }],
  ['method: 1.0', { method: 1.5 }],
  ['path: ["/"]', { path: ['/'] }],
  ['ip: 127', { ip: 127 }],
  ['headers: 5', { headers: 5 }],
  ['headers: "X-Api-Key: k"', { headers: 'X-Api-Key: k' }],
  ['headers value 5', { headers: { 'X-Api-Key': 5 } }],
  ['cost: "1"', { cost: '1' }],
  ['cost: -1', { cost: -1 }],
  ['cost: 1.5', { cost: 1.5 }],
  ['cost: NaN', { cost: NaN }],
  ['cost: Infinity', { cost: Infinity }],
  ['cost: 2^60', { cost: 2 ** 60 }],
  ['nowMs: "1000"', { nowMs: '1000' }],
  ['nowMs: -5', { nowMs: -5 }],
  ['nowMs: Date', { nowMs: new Date(1_000) }]
]

describe('checkSync: a bad argument type is a TypeError and consumes nothing', () => {
  for (const [name, request] of BAD_REQUESTS) {
    test(name, () => {
      const engine = Engine.fromObject(PER_USER)
      const error = thrown(() => engine.checkSync({ subject: 'alice', ...request }))
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
      assert.equal(engine.keyCount, 0, 'a refused call consumed nothing')
    })
  }
})

describe('check (Promise): a bad argument type rejects with a TypeError', () => {
  for (const [name, request] of BAD_REQUESTS) {
    test(name, async () => {
      const engine = Engine.fromObject(PER_USER)
      const error = await rejection(engine.check({ subject: 'alice', ...request }))
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
      assert.equal(engine.keyCount, 0)
    })
  }
})

describe('check (Promise) on a Redis engine: a bad argument type rejects with a TypeError', () => {
  // An unreachable Redis under on_error = "allow": the argument is refused before any store
  // call (a call that reached the store would answer an `unavailable` Decision).
  let engine
  for (const [name, request] of BAD_REQUESTS) {
    test(name, async () => {
      if (!engine) {
        engine = Engine.fromObject({
          store: { kind: 'redis', url: `redis://127.0.0.1:${await freePort()}`, timeout: '200ms', on_error: 'allow' },
          ...PER_USER
        })
      }
      const error = await rejection(engine.check({ subject: 'alice', ...request }))
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
    })
  }
})

describe('checkManySync: a bad request is a TypeError and nothing of the batch is decided', () => {
  const cases = [
    ['a string among objects', [{ subject: 'a' }, 'subject=b']],
    ['subject: 5', [{ subject: 'a' }, { subject: 5 }]],
    ['cost: "1"', [{ cost: '1' }]],
    ['cost: -1', [{ subject: 'a' }, { cost: -1 }]],
    ['headers as pairs', [{ headers: [['a', 'b']] }]],
    ['a number, not a list', 5],
    ['null, not a list', null]
  ]
  for (const [name, requests] of cases) {
    test(name, () => {
      const engine = Engine.fromObject(PER_USER)
      const error = thrown(() => engine.checkManySync(requests))
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
      assert.equal(engine.keyCount, 0, 'nothing of the batch was decided')
    })
  }
})

test('checkMany (Promise) rejects a bad batch with a TypeError', async () => {
  const engine = Engine.fromObject(PER_USER)
  for (const requests of [[{ subject: 'a' }, 'subject=b'], [{ cost: -1 }], [{ subject: 5 }]]) {
    const error = await rejection(engine.checkMany(requests))
    assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
  }
  assert.equal(engine.keyCount, 0)
})

test('a request that is not an object is a TypeError', async () => {
  const engine = Engine.fromObject(PER_USER)
  for (const request of ['alice', 5, true]) {
    assert.throws(() => engine.checkSync(request), TypeError)
    assert.ok(await rejection(engine.check(request)) instanceof TypeError)
  }
})

describe('other methods: a bad argument type is a TypeError', () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...PER_USER, ...SERVICE })
  const cases = [
    ['authenticate(5)', () => engine.authenticate(5)],
    ['authenticate()', () => engine.authenticate()],
    ['authenticate(token, { nowMs: "1" })', () => engine.authenticate(mint(), { nowMs: '1' })],
    ['authenticate(token, { nowMs: -1 })', () => engine.authenticate(mint(), { nowMs: -1 })],
    ['authorizeSync(null)', () => engine.authorizeSync(null)],
    ['authorizeSync(token, { path: 5 })', () => engine.authorizeSync(mint(), { path: 5 })],
    ['authorizeSync(token, "x")', () => engine.authorizeSync(mint(), 'x')],
    ['pick(5)', () => engine.pick(5)],
    ['upstreams(null)', () => engine.upstreams(null)],
    ['setUpstreamDown(api, a, "yes")', () => engine.setUpstreamDown('api', 'a', 'yes')],
    ['addUpstream weight "2"', () => engine.addUpstream('api', 'http://b', { weight: '2' })],
    ['addUpstream url 5', () => engine.addUpstream('api', 5)],
    ['breakerEvents("x")', () => engine.breakerEvents('x')],
    ['breakerEvents(-1)', () => engine.breakerEvents(-1)],
    ['fromToml(5)', () => Engine.fromToml(5)],
    ['fromJson({})', () => Engine.fromJson({})],
    ['fromObject([])', () => Engine.fromObject([])],
    ['fromObject(null)', () => Engine.fromObject(null)],
    ['new Engine({})', () => new Engine({})]
  ]
  for (const [name, call] of cases) {
    test(name, () => {
      const error = thrown(call)
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
    })
  }
})

test('authorize (Promise) rejects a bad argument with a TypeError', async () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...PER_USER })
  for (const pending of [engine.authorize(5), engine.authorize(mint(), { cost: -1 }), engine.authorize(mint(), { path: 5 })]) {
    const error = await rejection(pending)
    assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
  }
})

describe('Lease.finish with bad values: TypeError, the lease stays open', () => {
  for (const [name, args] of [
    ['outcome "ok"', ['ok']],
    ['outcome "SUCCESS"', ['SUCCESS']],
    ['outcome ""', ['']],
    ['outcome 5', [5]],
    ['latency -1', ['success', -1]],
    ['latency NaN', ['success', NaN]],
    ['latency Infinity', ['success', Infinity]],
    ['latency "5"', ['success', '5']]
  ]) {
    test(name, () => {
      const engine = Engine.fromObject(SERVICE)
      const lease = engine.pick('api')
      const error = thrown(() => lease.finish(...args))
      assert.ok(error instanceof TypeError, `${error.constructor.name} (code ${error.code}): ${error.message}`)
      assert.equal(lease.finished, false)
      lease.finish('success', 1)
      assert.equal(engine.upstreams('api')[0].successes, 1)
    })
  }
})

test('the crossing function reads checkSync\'s arguments as it does and decides nothing', () => {
  const engine = Engine.fromObject({
    rules: [{ name: 'one', key: 'subject', algorithm: 'fixed_window', limit: 1, window: '1m' }]
  })
  const crossing = engine._inner.crossingFunction()
  const out = new Float64Array(64)
  assert.equal(crossing(out, 'alice', 'free', 'GET', '/', '127.0.0.1', 1, 0, { a: 'b' }), undefined)
  assert.throws(() => crossing([], 'alice'), { name: 'TypeError', message: /out must be a Float64Array/ })
  assert.throws(() => crossing(out, 7), { name: 'TypeError', message: /subject must be a string/ })
  assert.throws(() => crossing(out, 'alice', null, null, null, null, -1), { name: 'TypeError', message: /cost/ })
  // Nothing was decided: alice's one request a minute is still there.
  assert.equal(engine.checkSync({ subject: 'alice' }).allowed, true)
  assert.equal(engine.checkSync({ subject: 'alice' }).allowed, false)
})
