'use strict'
/**
 * The Redis store through the binding, against real `redis-server` processes: decisions from
 * Redis, a TTL on every key, exact admission under 64 concurrent `check` Promises, batches,
 * `authorize`; the event loop running while Redis makes a call wait (`CLIENT PAUSE`); and
 * Redis killed and restarted under each `on_error` policy — as `tests/redis_store.rs` checks
 * the store in Rust and the Python binding's `test_redis.py` / `test_async.py` check it there.
 */

const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')

const { floodwall, mint, hs256Auth, redisStore, waitUntil, ticksWhile } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')

const { Engine, Decision, FloodwallError } = floodwall

const PATHS = ['/fixed', '/log', '/bucket', '/layered']

/**
 * One rule per exact algorithm, each allowing `limit` per hour on one global key, plus a
 * two-layer rule set on `/layered` (as `tests/redis_store.rs`).
 */
function rules (limit = 100) {
  const hourly = { key: 'global', limit, window: '1h' }
  return [
    { name: 'fixed', match: { paths: ['/fixed'] }, algorithm: 'fixed_window', ...hourly },
    { name: 'log', match: { paths: ['/log'] }, algorithm: 'sliding_window', ...hourly },
    { name: 'bucket', match: { paths: ['/bucket'] }, key: 'global', algorithm: 'token_bucket', capacity: limit, refill_rate: 0.0001 },
    { name: 'per-user', match: { paths: ['/layered'] }, key: 'subject', algorithm: 'sliding_window_counter', limit: 1000, window: '1h' },
    { name: 'layered-global', match: { paths: ['/layered'] }, algorithm: 'fixed_window', ...hourly }
  ]
}

/** Whether Redis decided `d`: itself, or a denial it gave, repeated from the deny cache. */
const fromRedis = (d) => d.store === 'redis' || (d.store === 'deny_cache' && !d.allowed)

/** Admitted requests out of `n` on `path`, one after the other, every decision from Redis. */
async function admitted (engine, path, subject, n) {
  let count = 0
  for (let i = 0; i < n; i++) {
    const d = await engine.check({ path, subject })
    assert.ok(fromRedis(d), `${d.store}: ${engine.storeFailure}`)
    if (d.allowed) count++
  }
  return count
}

/** Everything a caller can read of a check result. */
function described (result) {
  if (result instanceof Error) return { error: result.code, status: result.status, message: result.message }
  assert.ok(result instanceof Decision)
  const { store, ...rest } = result.toJSON()
  return { ...rest, layers: result.layers }
}

describe('on a shared redis-server', () => {
  let server
  before(async () => { server = await RedisServer.start() })
  after(async () => { if (server) await server.stop() })

  const newEngine = (fields = {}, extra = {}) =>
    Engine.fromObject({ store: redisStore(server, { on_error: 'deny', ...fields }), rules: rules(), ...extra })

  test('decisions come from Redis', async () => {
    const engine = newEngine()
    assert.equal(engine.storeKind, 'redis')
    assert.equal(engine.mayWait, true)
    assert.deepEqual(engine.rules, ['fixed', 'log', 'bucket', 'per-user', 'layered-global'])
    const pending = engine.check({ path: '/fixed', subject: 'a' })
    assert.ok(pending instanceof Promise)
    const d = await pending
    assert.ok(d instanceof Decision)
    assert.deepEqual([d.allowed, d.store, d.rule, d.remaining, d.limit], [true, 'redis', 'fixed', 99, 100])
    assert.equal(d.headers['RateLimit-Remaining'], '99')
    assert.equal(engine.storeFailure, null)
    assert.equal(engine.keyCount, 0, 'the memory store holds nothing')
  })

  test('every key written has a TTL', async () => {
    const store = redisStore(server, { on_error: 'deny' })
    const engine = Engine.fromObject({ store, rules: rules() })
    for (const path of PATHS) {
      for (const subject of ['a', 'b', 'c']) assert.equal(await admitted(engine, path, subject, 5), 5)
    }
    const keys = await server.command('KEYS', store.prefix + '*')
    assert.ok(Array.isArray(keys) && keys.length >= 7, JSON.stringify(keys))
    for (const key of keys) {
      const ttl = await server.command('PTTL', key)
      assert.ok(Number.isInteger(ttl) && ttl > 0, `${key}: ${ttl}`)
    }
  })

  test('two engines on one prefix share their counters', async () => {
    const store = redisStore(server, { on_error: 'deny' })
    const first = Engine.fromObject({ store, rules: rules() })
    const second = Engine.fromObject({ store, rules: rules() })
    assert.equal(await admitted(first, '/fixed', 'a', 60), 60)
    assert.equal(await admitted(second, '/fixed', 'b', 60), 40)
  })

  test('a denied flood through check() and checkMany costs Redis one call', async () => {
    const engine = newEngine()
    assert.equal(await admitted(engine, '/log', 'a', 100), 100)
    const calls = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await server.command('INFO', 'commandstats'))[1])
    const before = await calls()
    assert.equal((await engine.check({ path: '/log' })).store, 'redis', 'the first denial asks')
    // 2,000 repeats: 1,000 in waves of 100 concurrent check() Promises (the batching
    // dispatcher), 1,000 in checkMany batches of 100.
    const stores = new Map()
    const count = (ds) => { for (const d of ds) { assert.equal(d.allowed, false); stores.set(d.store, (stores.get(d.store) || 0) + 1) } }
    for (let wave = 0; wave < 10; wave++) {
      count(await Promise.all(Array.from({ length: 100 }, () => engine.check({ path: '/log' }))))
      count(await engine.checkMany(Array.from({ length: 100 }, () => ({ path: '/log' }))))
    }
    assert.deepEqual([...stores], [['deny_cache', 2000]])
    assert.equal(await calls() - before, 1, 'only the first denial asked Redis')
  })

  for (const path of PATHS) {
    test(`64 concurrent check Promises on ${path} admit exactly the limit`, async () => {
      const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny' }), rules: rules(40) })
      const decisions = await Promise.all(Array.from({ length: 64 }, (_, i) => engine.check({ path, subject: `user-${i}` })))
      assert.equal(decisions.length, 64)
      assert.ok(decisions.every(fromRedis), String(engine.storeFailure))
      assert.equal(decisions.filter((d) => d.allowed).length, 40)
      // Every admission took one unit: the remainders 0 … 39 each appear once.
      assert.deepEqual(decisions.filter((d) => d.allowed).map((d) => d.remaining).sort((a, b) => a - b), Array.from({ length: 40 }, (_, i) => i))
      const denied = await engine.check({ path, subject: 'late' })
      assert.equal(denied.allowed, false)
    })
  }

  test('64 concurrent checks from two engines on one prefix admit exactly the limit', async () => {
    const store = redisStore(server, { on_error: 'deny' })
    const engines = [Engine.fromObject({ store, rules: rules(50) }), Engine.fromObject({ store, rules: rules(50) })]
    const decisions = await Promise.all(Array.from({ length: 64 }, (_, i) => engines[i % 2].check({ path: '/log' })))
    assert.equal(decisions.filter((d) => d.allowed).length, 50)
    assert.ok(decisions.every(fromRedis))
  })

  test('8000 concurrent checks each get their own result (decisions and errors mixed)', async () => {
    // Five layers per decision (43 numbers a result), so the results of a burst take several
    // drains of the addon's output; every fifth-or-so request costs more than the limit.
    const layered = Array.from({ length: 5 }, (_, i) => ({ name: `l${i}`, key: 'subject', algorithm: 'fixed_window', limit: 100, window: '1h' }))
    const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny', timeout: '5s' }), rules: layered })
    assert.equal((await engine.check({ subject: 'warm' })).store, 'redis')
    assert.equal(await server.command('CLIENT', 'PAUSE', '300', 'ALL'), 'OK')
    const N = 8000
    const costOf = (i) => i % 120
    const results = await Promise.allSettled(Array.from({ length: N }, (_, i) => engine.check({ subject: `s${i}`, cost: costOf(i) })))
    const wrong = []
    for (const [i, r] of results.entries()) {
      const cost = costOf(i)
      if (cost > 100) {
        if (!(r.status === 'rejected' && r.reason instanceof FloodwallError && r.reason.code === 'cost_exceeds_limit')) wrong.push(`${i}: ${r.status} ${r.reason || JSON.stringify(r.value)}`)
      } else if (!(r.status === 'fulfilled' && r.value instanceof Decision && r.value.store === 'redis' && r.value.allowed &&
          r.value.remaining === 100 - cost && r.value.layers.length === 5)) {
        wrong.push(`${i} (cost ${cost}): ${r.status} ${r.reason || JSON.stringify(r.value)}`)
      }
    }
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of ${N} requests got a result that is not theirs`)
  })

  test('checkMany on Redis decides a batch with the same meaning, in order', async () => {
    const engine = newEngine()
    const requests = Array.from({ length: 250 }, (_, i) => ({ path: i % 2 === 0 ? '/fixed' : '/log', subject: 'batch' }))
    const pending = engine.checkMany(requests)
    assert.ok(pending instanceof Promise)
    const decisions = await pending
    assert.equal(decisions.length, 250)
    assert.ok(decisions.every((d) => d instanceof Decision && d.store === 'redis'))
    const even = decisions.filter((_, i) => i % 2 === 0)
    const odd = decisions.filter((_, i) => i % 2 === 1)
    assert.equal(even.filter((d) => d.allowed).length, 100)
    assert.equal(odd.filter((d) => d.allowed).length, 100)
    assert.deepEqual(even.map((d) => d.allowed), [...Array(100).fill(true), ...Array(25).fill(false)], 'in order')

    const [ok, tooCostly, noRule] = await engine.checkMany([
      { path: '/bucket', subject: 'batch' },
      { path: '/bucket', subject: 'batch', cost: 101 },
      { path: '/nothing-matches' }
    ])
    assert.ok(ok instanceof Decision)
    assert.deepEqual([ok.allowed, ok.store], [true, 'redis'])
    assert.ok(tooCostly instanceof FloodwallError)
    assert.equal(tooCostly.code, 'cost_exceeds_limit')
    assert.ok(noRule instanceof Decision)
    assert.deepEqual([noRule.allowed, noRule.rule], [true, null])
    assert.deepEqual(await engine.checkMany([]), [])
  })

  test('256 layers in one decision from Redis, by check and checkMany', async () => {
    const many = Array.from({ length: 256 }, (_, i) => ({ name: `r${i}`, key: 'subject', algorithm: i % 2 ? 'sliding_window' : 'fixed_window', limit: 10 + i, window: '1h' }))
    const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny' }), rules: many })
    const d = await engine.check({ subject: 'a' })
    assert.equal(d.store, 'redis', String(engine.storeFailure))
    assert.equal(d.layers.length, 256)
    assert.deepEqual(d.layers.map((l) => l.remaining), Array.from({ length: 256 }, (_, i) => 9 + i))
    const [batched] = await engine.checkMany([{ subject: 'a' }])
    assert.equal(batched.store, 'redis')
    assert.deepEqual(batched.layers.map((l) => l.remaining), Array.from({ length: 256 }, (_, i) => 8 + i))
  })

  test('a cost over the limit is an error on Redis too', async () => {
    const engine = newEngine()
    await assert.rejects(engine.check({ path: '/fixed', cost: 101 }), (e) => e instanceof FloodwallError && e.code === 'cost_exceeds_limit' && e.status === 429)
    const d = await engine.check({ path: '/fixed', cost: 100 })
    assert.deepEqual([d.allowed, d.remaining, d.store], [true, 0, 'redis'])
  })

  test('Redis decides what the memory store decides (the caller\'s clock)', async () => {
    const config = {
      rules: [
        { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 3, window: '1m', roles: { premium: { limit: 5 } } },
        { name: 'global', key: 'global', algorithm: 'token_bucket', capacity: 8, refill_rate: 2 }
      ]
    }
    const memory = Engine.fromObject(config)
    const redis = Engine.fromObject({ ...config, store: redisStore(server, { clock: 'local', on_error: 'deny' }) })
    const people = [['alice'], ['alice', 'premium'], ['bob'], ['alice'], ['alice'], ['alice'], ['carol', 'premium'], ['bob'], ['dave'], ['erin'], ['erin'], ['frank']]
    const allowed = []
    for (const [i, [subject, role]] of people.entries()) {
      const request = { subject, role, nowMs: 60_000 + 100 * i, path: '/api', method: 'GET' }
      const got = await redis.check(request)
      assert.ok(fromRedis(got))
      assert.deepEqual(described(got), described(memory.checkSync(request)), JSON.stringify(request))
      allowed.push(got.allowed)
    }
    assert.deepEqual(allowed, [true, true, true, true, true, false, true, true, true, true, true, false])
    const batch = [{ subject: 'zed', nowMs: 70_000 }, { subject: 'zed', cost: 9, nowMs: 70_000 }, { subject: 'zed', nowMs: 70_000 }]
    assert.deepEqual((await redis.checkMany(batch)).map(described), memory.checkManySync(batch).map(described))
  })

  test('authorize on Redis decides under the token\'s subject and role', async () => {
    const engine = Engine.fromObject({
      store: redisStore(server, { on_error: 'deny' }),
      auth: hs256Auth(),
      rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 2, window: '1m', roles: { premium: { limit: 5 } } }]
    })
    const premium = mint('alice', { role: 'premium' })
    const results = []
    for (let i = 0; i < 7; i++) results.push(await engine.authorize(premium, { path: '/api' }))
    for (const { identity, decision } of results) {
      assert.equal(identity.subject, 'alice')
      assert.equal(identity.role, 'premium')
      assert.equal(decision.limit, 5)
    }
    assert.deepEqual(results.map((r) => r.decision.allowed), [true, true, true, true, true, false, false])
    assert.deepEqual(results.map((r) => r.decision.store), [...Array(6).fill('redis'), 'deny_cache'], 'the repeated denial is the cache\'s')
    assert.deepEqual(results[0].identity.claims.sub, 'alice')
    assert.equal(results[0].identity.claim('role'), 'premium')
    const bob = await engine.authorize(mint('bob'))
    assert.deepEqual([bob.decision.limit, bob.decision.remaining], [2, 1])
    await assert.rejects(engine.authorize(mint('alice', { expiresIn: -3600 })), (e) => e instanceof FloodwallError && e.code === 'expired')
    await assert.rejects(engine.authorize('Bearer nope'), (e) => e instanceof FloodwallError && e.code === 'malformed_token' && e.status === 401)
    const denied = await engine.check({ subject: 'alice', role: 'premium' })
    assert.equal(denied.allowed, false, 'the counter is the subject\'s')
  })

  test('the sync calls refuse a Redis engine and consume nothing', async () => {
    const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny' }), rules: rules(), auth: hs256Auth() })
    for (const call of [
      () => engine.checkSync({ path: '/fixed' }),
      () => engine.checkManySync([{ path: '/fixed' }]),
      () => engine.authorizeSync(mint('alice'), { path: '/fixed' })
    ]) {
      assert.throws(call, (e) => e instanceof FloodwallError && e.code === 'invalid_config' && e.field === 'store.kind')
    }
    const d = await engine.check({ path: '/fixed' })
    assert.deepEqual([d.store, d.remaining], ['redis', 99], 'nothing was consumed')
  })

  // --- the event loop keeps running while Redis makes a call wait ----------------------------

  describe('while Redis is paused (CLIENT PAUSE 600 ALL), the event loop keeps running', () => {
    const MIN_TICKS = 10
    let engine
    let token

    before(async () => {
      engine = Engine.fromObject({
        store: redisStore(server, { on_error: 'deny', timeout: '3s' }),
        rules: rules(),
        auth: hs256Auth()
      })
      token = mint('grace', { role: 'premium' })
      // Warm up: the connection is open and the scripts are loaded before the pauses.
      for (const path of PATHS) assert.equal((await engine.check({ path, subject: 'warm' })).store, 'redis')
      assert.equal((await engine.authorize(token, { path: '/fixed' })).decision.store, 'redis')
    })

    const pause = async () => assert.equal(await server.command('CLIENT', 'PAUSE', '600', 'ALL'), 'OK')

    test('await check', async () => {
      await pause()
      const { result, ticks } = await ticksWhile(() => engine.check({ path: '/layered', subject: 'paused' }))
      assert.ok(result instanceof Decision)
      assert.deepEqual([result.store, result.allowed, result.rule], ['redis', true, 'layered-global'])
      assert.equal(result.remaining, 98)
      assert.ok(ticks >= MIN_TICKS, `the ticker fired ${ticks} times while check was pending`)
    })

    test('await checkMany', async () => {
      await pause()
      const { result, ticks } = await ticksWhile(() => engine.checkMany([{ path: '/fixed', subject: 'batch' }, { path: '/log', subject: 'batch' }]))
      assert.deepEqual(result.map((d) => d.store), ['redis', 'redis'])
      assert.deepEqual(result.map((d) => d.allowed), [true, true])
      assert.ok(ticks >= MIN_TICKS, `the ticker fired ${ticks} times while checkMany was pending`)
    })

    test('await authorize', async () => {
      await pause()
      const { result, ticks } = await ticksWhile(() => engine.authorize(token, { path: '/bucket' }))
      assert.equal(result.identity.subject, 'grace')
      assert.deepEqual([result.decision.store, result.decision.allowed, result.decision.rule], ['redis', true, 'bucket'])
      assert.ok(ticks >= MIN_TICKS, `the ticker fired ${ticks} times while authorize was pending`)
    })

    test('64 concurrent checks', async () => {
      await pause()
      const { result, ticks } = await ticksWhile(() => Promise.all(Array.from({ length: 64 }, (_, i) => engine.check({ path: '/layered', subject: `p${i}` }))))
      assert.equal(result.length, 64)
      assert.ok(result.every((d) => d.store === 'redis' && d.allowed))
      assert.ok(ticks >= MIN_TICKS, `the ticker fired ${ticks} times while 64 checks were pending`)
    })

    test('the ticker ran before the check settled, in that order', async () => {
      await pause()
      const order = []
      let n = 0
      const ticker = setInterval(() => {
        if (n++ < 5) order.push('tick')
        if (n >= 1000) clearInterval(ticker)
      }, 5)
      try {
        const d = await engine.check({ path: '/fixed', subject: 'order' })
        order.push(`check:${d.store}`)
      } finally {
        clearInterval(ticker)
      }
      assert.deepEqual(order, ['tick', 'tick', 'tick', 'tick', 'tick', 'check:redis'])
    })
  })
})

// --- Redis killed and restarted --------------------------------------------------------------

const WHILE_DOWN = {
  fallback: (d) => {
    assert.ok(d instanceof Decision, String(d))
    assert.deepEqual([d.store, d.allowed], ['fallback', true])
  },
  allow: (d) => {
    assert.ok(d instanceof Decision, String(d))
    assert.deepEqual([d.store, d.allowed], ['unavailable', true])
  },
  deny: (d) => {
    assert.ok(d instanceof Decision, String(d))
    assert.deepEqual([d.store, d.allowed, d.retryAfterMs], ['unavailable', false, 1000])
    assert.equal(d.headers['Retry-After'], '1')
  },
  error: (d) => {
    assert.ok(d instanceof FloodwallError, `not an error: ${d && JSON.stringify(d)}`)
    assert.equal(d.code, 'store_unavailable')
    assert.equal(d.status, 503)
  }
}

/** `check`'s result, a Decision or the error it rejects with. */
async function settle (promise) {
  try {
    return await promise
  } catch (error) {
    return error
  }
}

describe('Redis killed and restarted', () => {
  for (const [policy, whileDown] of Object.entries(WHILE_DOWN)) {
    test(`on_error = "${policy}"`, async () => {
      let own = await RedisServer.start()
      try {
        const engine = Engine.fromObject({
          store: { kind: 'redis', url: own.url, prefix: 'restart:', on_error: policy, timeout: '300ms' },
          rules: rules()
        })
        assert.equal(await admitted(engine, '/layered', 'u', 5), 5)
        assert.equal(engine.storeFailure, null)
        assert.equal(engine.storeHealth.state, 'ok')
        const events = []
        engine.on('storeHealth', (health, message) => events.push([health, message]))
        const port = own.port
        await own.stop()

        for (let i = 0; i < 20; i++) whileDown(await settle(engine.check({ path: '/layered', subject: 'u' })))
        const batch = await engine.checkMany([{ path: '/layered', subject: 'u' }, { path: '/layered', subject: 'u' }, { path: '/fixed' }])
        assert.equal(batch.length, 3)
        for (const d of batch) whileDown(d)
        assert.equal(typeof engine.storeFailure, 'string')
        // 23 failed calls opened the breaker: degraded with a fallback, failing without.
        const down = engine.storeHealth
        assert.equal(down.state, policy === 'fallback' ? 'degraded' : 'failing', JSON.stringify(down))
        assert.ok(typeof down.reason === 'string' && ['refused', 'timeout'].includes(down.reasonKind), JSON.stringify(down))

        own = await RedisServer.start(port)
        const back = await waitUntil(async () => {
          const d = await settle(engine.check({ path: '/layered', subject: 'u' }))
          return d instanceof Decision && d.store === 'redis'
        }, { attempts: 400, pauseMs: 50 })
        assert.ok(back, `Redis not used again after its restart: ${engine.storeFailure}`)
        assert.equal(await admitted(engine, '/layered', 'u', 5), 5)
        assert.equal(engine.storeFailure, null, 'Redis answers again, yet storeFailure says it fails')
        const up = engine.storeHealth
        assert.deepEqual([up.state, up.reason, up.reasonKind], ['ok', null, null])
        assert.ok(up.sinceMs >= down.sinceMs)
        // One event per transition, each with its sentence: down, then back.
        await waitUntil(() => events.length >= 2, { attempts: 100, pauseMs: 10 })
        assert.deepEqual(events.map(([h]) => h.state), [down.state, 'ok'], JSON.stringify(events))
        assert.deepEqual(events[0][0], down)
        assert.match(events[0][1], policy === 'fallback' ? /degraded: .*fallback decides/ : /failing: .*on_error answers alone/)
        assert.deepEqual([events[1][0].reason, events[1][0].reasonKind], [null, null])
        assert.match(events[1][1], /back: deciding on Redis again/)
      } finally {
        await own.stop()
      }
    })
  }

  test('a check pending when Redis dies settles by the policy', async () => {
    const own = await RedisServer.start()
    try {
      const engine = Engine.fromObject({
        store: { kind: 'redis', url: own.url, prefix: 'dying:', on_error: 'fallback', timeout: '1s' },
        rules: rules()
      })
      assert.equal((await engine.check({ path: '/fixed' })).store, 'redis')
      assert.equal(await own.command('CLIENT', 'PAUSE', '5000', 'ALL'), 'OK')
      const pending = engine.check({ path: '/fixed' })
      await own.stop()
      const d = await pending
      assert.ok(d instanceof Decision)
      assert.deepEqual([d.store, d.allowed], ['fallback', true])
    } finally {
      await own.stop()
    }
  })
})
