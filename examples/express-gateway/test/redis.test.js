'use strict'
/**
 * The gateway end to end on the Redis store: a real `redis-server` on a free port (the Node
 * package's harness; this file FAILS, never skips, when it cannot start one), the sample
 * upstreams and the gateway in this process, real HTTP. Each stack writes under its own key
 * prefix. With REDIS_URL the gateway also streams the engine's events to a Redis stream.
 */

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const { startStack, request, waitUntil, redisHarness } = require('./helpers.js')

/** The content type of Prometheus's text format 0.0.4, which /metrics must answer with. */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

const { RedisServer } = redisHarness()

const LIMITS = {
  free: { capacity: 5, refill_rate: 0.01 },
  premium: { capacity: 100, refill_rate: 0.01 }
}

let redis
before(async () => { redis = await RedisServer.start() })
after(async () => { if (redis) await redis.stop() })

/** A stack on the test server, under a prefix and stream of its own unless given. */
function redisStack (options = {}) {
  const tag = crypto.randomBytes(4).toString('hex')
  return startStack({ redisUrl: redis.url, redisPrefix: `gw-${tag}:`, stream: `gw-${tag}:events`, limits: LIMITS, ...options })
}

test('on Redis: 401 without a token, 200, then 429 with Retry-After for free while premium passes; state in Redis with TTLs', async (t) => {
  const stack = await redisStack({ redisPrefix: 'gw-limits:' })
  t.after(() => stack.close())
  assert.equal(stack.engine.storeKind, 'redis')

  assert.equal((await request(`${stack.url}/api/orders`)).status, 401)
  const free = stack.token('alice', 'free')
  for (let i = 0; i < LIMITS.free.capacity; i++) {
    const res = await request(`${stack.url}/api/orders`, { token: free })
    assert.equal(res.status, 200, `request ${i + 1}`)
    assert.equal(res.json.service, 'orders')
  }
  const limited = await request(`${stack.url}/api/orders`, { token: free })
  assert.equal(limited.status, 429)
  assert.equal(limited.json.rule, 'per-user')
  assert.ok(Number(limited.headers['retry-after']) >= 1)
  const premium = stack.token('bob', 'premium')
  for (let i = 0; i < 8; i++) assert.equal((await request(`${stack.url}/api/catalog`, { token: premium })).status, 200)

  const keys = await redis.command('KEYS', 'gw-limits:*')
  assert.ok(keys.length >= 2, `keys: ${keys}`)
  for (const key of keys) {
    const ttl = await redis.command('PTTL', key)
    assert.ok(ttl > 0, `${key} has PTTL ${ttl}`)
  }
  const health = await request(`${stack.url}/health`)
  assert.equal(health.json.store, 'redis')
  assert.equal(health.json.store_failure, null)
})

test('on Redis: two gateways share one caller\'s limit', async (t) => {
  const prefix = `gw-shared-${crypto.randomBytes(4).toString('hex')}:`
  const first = await redisStack({ redisPrefix: prefix })
  t.after(() => first.close())
  const second = await redisStack({ redisPrefix: prefix })
  t.after(() => second.close())
  const free = first.token('alice', 'free')

  const statuses = []
  for (let i = 0; i < LIMITS.free.capacity + 2; i++) {
    const gateway = i % 2 === 0 ? first : second
    statuses.push((await request(`${gateway.url}/api/catalog`, { token: free })).status)
  }
  assert.deepEqual(statuses, [...Array(LIMITS.free.capacity).fill(200), 429, 429])
})

test('on Redis: proxying across both upstreams, and the flaky one\'s breaker opening', async (t) => {
  const stack = await redisStack()
  t.after(() => stack.close())
  const premium = stack.token('bob', 'premium')

  const served = []
  for (let i = 0; i < 4; i++) served.push((await request(`${stack.url}/api/catalog/${i}`, { token: premium })).json.upstream)
  assert.deepEqual(served, ['catalog-a', 'catalog-b', 'catalog-a', 'catalog-b'])

  const answers = []
  for (let i = 0; i < 20; i++) {
    const res = await request(`${stack.url}/api/orders?fail=1`, { token: premium })
    answers.push([res.headers['x-upstream'], res.status])
  }
  assert.equal(answers.filter(([upstream]) => upstream === 'orders-b').length, 6)
  assert.deepEqual(answers.slice(12), Array(8).fill(['orders-a', 200]))
  assert.equal(stack.engine.upstreams('orders')[1].state, 'open')
})

test('on Redis: /dashboard/data and /metrics show the traffic, and the events reach the stream', async (t) => {
  const stream = `gw-${crypto.randomBytes(4).toString('hex')}:events`
  const stack = await redisStack({ stream })
  t.after(() => stack.close())
  const free = stack.token('alice', 'free')
  for (let i = 0; i < LIMITS.free.capacity + 2; i++) await request(`${stack.url}/api/orders`, { token: free })
  await request(`${stack.url}/api/orders`)

  const data = (await request(`${stack.url}/dashboard/data`)).json
  assert.equal(data.store.kind, 'redis')
  assert.equal(data.report.store_kind, 'redis')
  assert.equal(data.report.totals.requests, LIMITS.free.capacity + 3)
  assert.equal(data.report.totals.rate_limited, 2)
  assert.equal(data.report.totals.auth_rejected, 1)
  // per-user blocks after 50 denials, so each denial counts and goes to Redis: none is
  // answered from the deny cache.
  assert.equal(data.report.stores.redis, LIMITS.free.capacity + 2)
  assert.equal(data.report.stores.deny_cache || 0, 0)
  assert.deepEqual(data.report.breaches_by_subject.map((e) => [e.key, e.count]), [['alice', 2]])
  assert.equal(data.report.sink.stream, stream)

  // The sink writes in batches in the background: wait (bounded) for all of them.
  const written = await waitUntil(async () => Number(await redis.command('XLEN', stream)) >= LIMITS.free.capacity + 3, { attempts: 250, pauseMs: 40 })
  assert.ok(written, `XLEN ${stream} = ${await redis.command('XLEN', stream)}`)
  const sink = (await request(`${stack.url}/dashboard/data`)).json.report.sink
  assert.equal(sink.dropped, 0)
  assert.equal(sink.last_error, null)

  const metrics = await request(`${stack.url}/metrics`)
  assert.equal(metrics.status, 200)
  assert.equal(metrics.headers['content-type'], PROMETHEUS_CONTENT_TYPE)
  const lines = new Set(metrics.text.split('\n'))
  assert.ok(lines.has('floodwall_rate_limited_total{rule="per-user"} 2'), metrics.text)
  assert.ok(lines.has(`floodwall_store_decisions_total{store="redis"} ${LIMITS.free.capacity + 2}`), metrics.text)
  assert.ok(!metrics.text.includes('floodwall_store_decisions_total{store="deny_cache"} 1'), metrics.text)
})

test('on Redis: /health answers 503 with the reason while Redis is down, and 200 once it is back', async (t) => {
  let own = await RedisServer.start()
  t.after(() => own.stop())
  const stack = await startStack({ redisUrl: own.url, redisPrefix: 'gw-down:', limits: LIMITS })
  t.after(() => stack.close())
  const premium = stack.token('bob', 'premium')
  assert.equal((await request(`${stack.url}/api/catalog`, { token: premium })).status, 200)
  assert.equal((await request(`${stack.url}/health`)).status, 200)

  const port = own.port
  await own.stop()
  // The fallback decides while Redis is away: requests still pass, and /health says why.
  for (let i = 0; i < 5; i++) assert.equal((await request(`${stack.url}/api/catalog`, { token: premium })).status, 200)
  const down = await request(`${stack.url}/health`)
  assert.equal(down.status, 503, JSON.stringify(down.json))
  assert.equal(down.json.ok, false)
  assert.equal(down.json.store_health.state, 'degraded')
  assert.ok(['refused', 'timeout'].includes(down.json.store_health.reason_kind), JSON.stringify(down.json))
  assert.equal(typeof down.json.store_health.reason, 'string')
  assert.equal((await request(`${stack.url}/dashboard/data`)).json.store.health.state, 'degraded')

  own = await RedisServer.start(port)
  const back = await waitUntil(async () => (await request(`${stack.url}/health`)).status === 200, { attempts: 100, pauseMs: 50 })
  assert.ok(back, 'Redis is back, yet /health still answers 503')
  const up = (await request(`${stack.url}/health`)).json
  assert.deepEqual([up.ok, up.store_health.state, up.store_health.reason], [true, 'ok', null])
})
