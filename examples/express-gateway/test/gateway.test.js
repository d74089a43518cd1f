'use strict'
/**
 * The gateway end to end on the memory store, over real HTTP on free 127.0.0.1 ports: the
 * sample upstreams and the gateway run in this process (test/helpers.js), and every request
 * goes through a socket. Limits are set so that nothing refills during a test (a refill of
 * one token per 100 s), so every count asserted is exact.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')

const { startStack, request } = require('./helpers.js')
const { mintToken } = require('../lib/tokens.js')

/** The content type of Prometheus's text format 0.0.4, which /metrics must answer with. */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Five for a free caller, a hundred for premium, three orders created an hour: none refill. */
const LIMITS = {
  free: { capacity: 5, refill_rate: 0.01 },
  premium: { capacity: 100, refill_rate: 0.01 },
  orderWrites: { limit: 3, window: '1h' }
}

test('a request without a valid token is refused with 401 and a Bearer challenge', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())

  const missing = await request(`${stack.url}/api/orders`)
  assert.equal(missing.status, 401)
  assert.match(missing.headers['www-authenticate'], /^Bearer realm="floodwall"/)
  assert.equal(missing.headers['content-type'], 'application/problem+json')
  assert.equal(missing.json.code, 'missing_token')

  const forged = await request(`${stack.url}/api/orders`, {
    token: mintToken('another-secret-of-at-least-32-bytes-000000', { subject: 'alice', role: 'premium' })
  })
  assert.equal(forged.status, 401)
  assert.equal(forged.json.code, 'bad_signature')
  assert.match(forged.headers['www-authenticate'], /error="invalid_token"/)

  const expired = await request(`${stack.url}/api/orders`, {
    token: mintToken(stack.settings.secret, { subject: 'alice', role: 'free', nowS: Math.floor(Date.now() / 1000) - 7200, ttlSeconds: 3600 })
  })
  assert.equal(expired.status, 401)
  assert.equal(expired.json.code, 'expired')
})

test('a free caller is served, then limited with 429 and Retry-After, while a premium caller still passes', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const free = stack.token('alice', 'free')
  const premium = stack.token('bob', 'premium')

  const statuses = []
  for (let i = 0; i < LIMITS.free.capacity; i++) {
    const res = await request(`${stack.url}/api/catalog`, { token: free })
    statuses.push(res.status)
    if (i === 0) {
      assert.equal(res.json.service, 'catalog')
      assert.equal(res.headers['ratelimit-limit'], String(LIMITS.free.capacity))
      assert.equal(res.headers['ratelimit-remaining'], String(LIMITS.free.capacity - 1))
    }
  }
  assert.deepEqual(statuses, Array(LIMITS.free.capacity).fill(200))

  const limited = await request(`${stack.url}/api/catalog`, { token: free })
  assert.equal(limited.status, 429)
  assert.equal(limited.json.code, 'rate_limited')
  assert.equal(limited.json.rule, 'per-user')
  assert.ok(Number(limited.headers['retry-after']) >= 1, `Retry-After: ${limited.headers['retry-after']}`)
  assert.equal(limited.headers['ratelimit-remaining'], '0')

  // The free caller's bucket is its own: a premium caller, and another free one, still pass.
  for (let i = 0; i < LIMITS.free.capacity + 5; i++) {
    const res = await request(`${stack.url}/api/catalog`, { token: premium })
    assert.equal(res.status, 200, `premium request ${i + 1}`)
  }
  assert.equal((await request(`${stack.url}/api/orders`, { token: stack.token('carol', 'free') })).status, 200)
  // A role the configuration does not know gets the free limits.
  const stranger = stack.token('dave', 'gold')
  for (let i = 0; i < LIMITS.free.capacity; i++) await request(`${stack.url}/api/orders`, { token: stranger })
  assert.equal((await request(`${stack.url}/api/orders`, { token: stranger })).status, 429)
})

test('the per-endpoint limit on creating orders holds for every caller, premium too', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const callers = [stack.token('bob', 'premium'), stack.token('alice', 'free'), stack.token('carol', 'free')]
  const body = JSON.stringify({ item: 'beans', quantity: 2 })
  const post = (token) => request(`${stack.url}/api/orders`, { method: 'POST', token, body, headers: { 'Content-Type': 'application/json' } })

  for (const token of callers) {
    const res = await post(token)
    assert.equal(res.status, 201)
    assert.equal(res.json.body_bytes, Buffer.byteLength(body))
  }
  const refused = await post(callers[0])
  assert.equal(refused.status, 429)
  assert.equal(refused.json.rule, 'order-writes')
  assert.ok(Number(refused.headers['retry-after']) >= 1)
  // Reading is another endpoint: not limited by it.
  assert.equal((await request(`${stack.url}/api/orders`, { token: callers[0] })).status, 200)
})

test('requests are balanced across both upstreams of each service', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const premium = stack.token('bob', 'premium')

  for (const [service, names] of [['orders', ['orders-a', 'orders-b']], ['catalog', ['catalog-a', 'catalog-b']]]) {
    const served = []
    for (let i = 0; i < 6; i++) {
      const res = await request(`${stack.url}/api/${service}/${i + 1}`, { token: premium })
      assert.equal(res.status, 200)
      assert.equal(res.json.service, service)
      assert.equal(res.headers['x-upstream'], res.json.upstream)
      served.push(res.json.upstream)
    }
    // Round robin (orders) and least connections with ties taken in turn (catalog): one
    // call at a time alternates.
    assert.deepEqual(new Set(served), new Set(names), `${service}: ${served.join(', ')}`)
    assert.equal(served.filter((name) => name === names[0]).length, 3, `${service}: ${served.join(', ')}`)
    const status = stack.engine.upstreams(service)
    assert.deepEqual(status.map((u) => [u.name, u.calls, u.failures, u.inFlight]), names.map((name) => [name, 3, 0, 0]))
  }
})

test('the flaky upstream trips its breaker and its traffic moves to the healthy one', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const premium = stack.token('bob', 'premium')

  // `?fail=1` makes orders-b fail every call; orders-a ignores it. The breaker opens at a
  // failure rate of 50 % over at least 6 calls: orders-b's 6th failure.
  const answers = []
  for (let i = 0; i < 30; i++) {
    const res = await request(`${stack.url}/api/orders?fail=1`, { token: premium })
    answers.push([res.headers['x-upstream'], res.status])
  }
  const failed = answers.filter(([upstream]) => upstream === 'orders-b')
  assert.equal(failed.length, 6, JSON.stringify(answers))
  assert.ok(failed.every(([, status]) => status === 503))
  // Round robin until orders-b's 6th failure (the 12th request); orders-a alone after it.
  assert.deepEqual(answers.slice(12), Array(18).fill(['orders-a', 200]))

  const [a, b] = stack.engine.upstreams('orders')
  assert.equal(a.state, 'closed')
  assert.equal(b.state, 'open')
  assert.equal(b.failures, 6)
  assert.equal(a.calls, 24)
  const events = stack.engine.breakerEvents(0)
  assert.deepEqual(events.map((e) => [e.service, e.upstream, e.from, e.to]), [['orders', 'orders-b', 'closed', 'open']])

  // The catalog's breakers are their own.
  assert.equal((await request(`${stack.url}/api/catalog`, { token: premium })).status, 200)
  assert.ok(stack.engine.upstreams('catalog').every((u) => u.state === 'closed'))
})

test('/metrics answers Prometheus text that counts the traffic', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const free = stack.token('alice', 'free')
  for (let i = 0; i < LIMITS.free.capacity + 2; i++) await request(`${stack.url}/api/orders`, { token: free })
  await request(`${stack.url}/api/orders`)

  const res = await request(`${stack.url}/metrics`)
  assert.equal(res.status, 200)
  assert.equal(res.headers['content-type'], PROMETHEUS_CONTENT_TYPE)
  assert.match(res.text, /^# HELP /m)
  assert.match(res.text, /^# TYPE \S+ (counter|gauge|histogram|summary)$/m)
  // Every sample line is `name{labels} value`; the names carry the package's prefix.
  const samples = res.text.split('\n').filter((line) => line !== '' && !line.startsWith('#'))
  assert.ok(samples.length > 0)
  for (const line of samples) assert.match(line, /^floodwall_[a-z0-9_]+(\{[^}]*\})? -?[0-9.e+-]+$|^floodwall_[a-z0-9_]+(\{[^}]*\})? (NaN|\+Inf|-Inf)$/, line)
  // The traffic above, counted: 5 admitted, 2 limited by per-user, 1 without a token.
  const lines = new Set(res.text.split('\n'))
  for (const line of [
    'floodwall_decisions_total{outcome="admitted"} 5',
    'floodwall_decisions_total{outcome="rate_limited"} 2',
    'floodwall_decisions_total{outcome="auth_rejected"} 1',
    'floodwall_rate_limited_total{rule="per-user"} 2',
    'floodwall_auth_rejections_total{reason="missing_token"} 1',
    'floodwall_upstream_up{service="orders",upstream="orders-a"} 1',
    'floodwall_upstream_up{service="catalog",upstream="catalog-b"} 1'
  ]) assert.ok(lines.has(line), `missing: ${line}\n${res.text}`)
})

test('/dashboard/data reflects the traffic: totals, top endpoints, breaches, upstreams and trips', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const free = stack.token('alice', 'free')
  const premium = stack.token('bob', 'premium')

  let sent = 0
  const send = async (path, token) => { sent++; return request(`${stack.url}${path}`, { token }) }
  for (let i = 0; i < LIMITS.free.capacity + 3; i++) await send('/api/orders', free) // 5 admitted, 3 limited
  for (let i = 0; i < 4; i++) await send('/api/catalog', premium)
  for (let i = 0; i < 2; i++) await send('/api/orders') // 2 without a token
  for (let i = 0; i < 14; i++) await send('/api/orders?fail=1', premium) // trips orders-b

  const res = await request(`${stack.url}/dashboard/data`)
  assert.equal(res.status, 200)
  assert.equal(res.headers['cache-control'], 'no-store')
  const { report, services, breaker_events: breakerEvents, store } = res.json

  assert.deepEqual({ ...store, health: { ...store.health, since_ms: typeof store.health.since_ms } },
    { kind: 'memory', failure: null, health: { state: 'ok', since_ms: 'number', reason: null, reason_kind: null } })
  assert.equal(report.store_kind, 'memory')
  assert.equal(report.totals.requests, sent)
  assert.equal(report.totals.rate_limited, 3)
  assert.equal(report.totals.auth_rejected, 2)
  assert.equal(report.totals.admitted, sent - 5)
  assert.equal(report.totals.breaker_trips, 1)
  assert.ok(report.per_minute.reduce((n, m) => n + m.requests, 0) === sent)
  assert.ok(report.peaks.length >= 1)
  assert.ok(report.peaks[0].requests > 0)
  // By clock hour: every request so far, in this hour (or the last two, across an hour's turn).
  const hours = res.json.hours
  assert.ok(hours.length >= 1 && hours.length <= 2, JSON.stringify(hours))
  assert.equal(hours.reduce((n, h) => n + h.requests, 0), sent)
  assert.equal(hours.reduce((n, h) => n + h.rate_limited, 0), 3)
  assert.ok(hours.every((h) => h.start_ms % 3_600_000 === 0))

  const endpoints = Object.fromEntries(report.top_endpoints.map((e) => [e.key, e.count]))
  assert.ok(Object.keys(endpoints)[0].startsWith('GET /api/orders'), JSON.stringify(report.top_endpoints))
  assert.ok(Object.keys(endpoints).some((key) => key.startsWith('GET /api/catalog')), JSON.stringify(report.top_endpoints))

  const keys = (list) => Object.fromEntries(list.map((e) => [e.key, e.count]))
  assert.deepEqual(keys(report.breaches_by_subject), { alice: 3 })
  assert.deepEqual(keys(report.breaches_by_role), { free: 3 })
  assert.deepEqual(keys(report.breaches_by_rule), { 'per-user': 3 })
  assert.equal(report.breaches_by_endpoint.reduce((n, e) => n + e.count, 0), 3)
  assert.deepEqual(keys(report.breaker_trips), { 'orders/orders-b': 1 })
  // orders-b served 2 of the free caller's 5 admitted calls, then failed 4 `fail=1` calls:
  // 4 failures in 6 calls is past 50 %, and its breaker opened.
  assert.deepEqual(keys(report.upstream_failures), { 'orders/orders-b': 4 })
  assert.equal(report.totals.upstream_failures, 4)
  assert.equal(report.totals.upstream_calls, sent - 5) // every admitted call was proxied
  assert.equal(report.totals.responses, sent)
  assert.equal(report.auth_rejections.missing_token, 2)

  assert.deepEqual(Object.keys(services), ['orders', 'catalog'])
  const b = services.orders.find((u) => u.name === 'orders-b')
  assert.equal(b.state, 'open')
  assert.equal(b.healthy, false)
  assert.ok(services.catalog.every((u) => u.healthy && u.state === 'closed' && typeof u.inFlight === 'number'))
  assert.deepEqual(breakerEvents.map((e) => [e.upstream, e.to]), [['orders-b', 'open']])
})

test('the dashboard page and its assets are served, with nothing from elsewhere allowed', async (t) => {
  const stack = await startStack()
  t.after(() => stack.close())
  const page = await request(`${stack.url}/dashboard`)
  assert.equal(page.status, 200)
  assert.match(page.headers['content-type'], /^text\/html/)
  assert.match(page.headers['content-security-policy'], /default-src 'none'/)
  assert.match(page.text, /data-testid="traffic-chart"/)
  assert.doesNotMatch(page.text, /https?:\/\//, 'no external resource')
  for (const asset of ['dashboard.js', 'dashboard.css']) {
    const res = await request(`${stack.url}/dashboard/assets/${asset}`)
    assert.equal(res.status, 200, asset)
  }
  const health = await request(`${stack.url}/health`)
  assert.equal(health.status, 200)
  const { since_ms: since, ...rest } = health.json.store_health
  assert.ok(since > 0)
  assert.deepEqual({ ...health.json, store_health: rest }, {
    service: 'floodwall-express-gateway',
    ok: true,
    store: 'memory',
    store_health: { state: 'ok', reason: null, reason_kind: null },
    store_failure: null
  })
  // Anything else needs a token before the gateway says whether it routes it.
  const anonymous = await request(`${stack.url}/elsewhere`)
  assert.equal(anonymous.status, 401)
  assert.equal(anonymous.json.code, 'missing_token')
  const missing = await request(`${stack.url}/elsewhere`, { token: stack.token('alice', 'free') })
  assert.equal(missing.status, 404)
  assert.equal(missing.json.code, 'not_found')
})

test('an admin inspects, penalizes, rewards and resets a caller; others may not', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const admin = stack.token('root', 'admin')
  const free = stack.token('alice', 'free')
  assert.equal((await request(`${stack.url}/api/catalog`, { token: free })).status, 200)

  const keyUrl = `${stack.url}/admin/keys/per-user/alice`
  const inspected = await request(keyUrl, { token: admin })
  assert.equal(inspected.status, 200)
  assert.equal(inspected.json.limit, LIMITS.free.capacity)
  assert.equal(inspected.json.remaining, LIMITS.free.capacity - 1)
  assert.equal(inspected.json.blockedForMs, null)

  assert.equal((await request(`${keyUrl}/penalize?points=4`, { method: 'POST', token: admin })).status, 204)
  assert.equal((await request(`${stack.url}/api/catalog`, { token: free })).status, 429)
  assert.equal((await request(`${keyUrl}/reward?points=1`, { method: 'POST', token: admin })).status, 204)
  assert.equal((await request(keyUrl, { token: admin })).json.remaining, 1)
  assert.equal((await request(keyUrl, { method: 'DELETE', token: admin })).status, 204)
  assert.equal((await request(keyUrl, { token: admin })).json.remaining, LIMITS.free.capacity)

  const forbidden = await request(keyUrl, { token: free })
  assert.equal(forbidden.status, 403)
  assert.equal(forbidden.json.code, 'access_denied')
  const unknown = await request(`${stack.url}/admin/keys/nope/alice`, { token: admin })
  assert.equal(unknown.status, 404)
  assert.equal(unknown.json.code, 'unknown_rule')
  const notBlocking = await request(`${stack.url}/admin/keys/global/-/block?ms=1000`, { method: 'POST', token: admin })
  assert.equal(notBlocking.status, 409)
  assert.equal((await request(`${keyUrl}/block?ms=60000`, { method: 'POST', token: admin })).status, 204)
  const blocked = await request(`${stack.url}/api/catalog`, { token: free })
  assert.equal(blocked.status, 429)
  assert.equal(blocked.json.blocked, true)
  assert.ok((await request(keyUrl, { token: admin })).json.blockedForMs > 50_000)
  const bad = await request(`${keyUrl}/penalize?points=-2`, { method: 'POST', token: admin })
  assert.equal(bad.status, 400)
})

test('an admin gives a caller a limit of its own for a while, then takes it away', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const admin = stack.token('root', 'admin')
  const free = stack.token('erin', 'free')
  const keyUrl = `${stack.url}/admin/keys/per-user/erin`

  assert.equal((await request(`${keyUrl}/limit?limit=8&ms=600000`, { method: 'POST', token: admin })).status, 204)
  const inspected = (await request(keyUrl, { token: admin })).json
  assert.equal(inspected.limit, 8)
  assert.ok(inspected.keyLimitForMs > 590_000 && inspected.keyLimitForMs <= 600_000, `${inspected.keyLimitForMs}`)
  const statuses = []
  for (let i = 0; i < 9; i++) {
    const res = await request(`${stack.url}/api/catalog`, { token: free })
    statuses.push(res.status)
    if (i === 0) assert.equal(res.headers['ratelimit-limit'], '8')
  }
  assert.deepEqual(statuses, [...Array(8).fill(200), 429])

  assert.equal((await request(`${keyUrl}/limit`, { method: 'DELETE', token: admin })).status, 204)
  const cleared = (await request(keyUrl, { token: admin })).json
  assert.equal(cleared.limit, LIMITS.free.capacity)
  assert.equal(cleared.keyLimitForMs, null)

  const bad = await request(`${keyUrl}/limit?limit=0&ms=1000`, { method: 'POST', token: admin })
  assert.equal(bad.status, 409)
  assert.equal(bad.json.code, 'invalid_config')
  const noTime = await request(`${keyUrl}/limit?limit=3`, { method: 'POST', token: admin })
  assert.equal(noTime.status, 400)
  const notKeyed = await request(`${stack.url}/admin/keys/global/-/limit?limit=5&ms=1000`, { method: 'POST', token: admin })
  assert.equal(notKeyed.status, 409)
  assert.match(notKeyed.json.detail, /takes no key limits/)
  assert.equal((await request(`${keyUrl}/limit`, { method: 'DELETE', token: free })).status, 403)
})

test('a caller denied fifty times is blocked, and the dashboard lists it', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const abusive = stack.token('mallory', 'free')
  const statuses = []
  for (let i = 0; i < LIMITS.free.capacity + 50; i++) {
    statuses.push((await request(`${stack.url}/api/catalog`, { token: abusive })).status)
  }
  assert.deepEqual(statuses.filter((s) => s === 200).length, LIMITS.free.capacity)
  const blocked = await request(`${stack.url}/api/catalog`, { token: abusive })
  assert.equal(blocked.status, 429)
  assert.equal(blocked.json.blocked, true)
  assert.equal(blocked.headers['retry-after'], '30')
  const data = (await request(`${stack.url}/dashboard/data`)).json
  assert.equal(data.blocked.length, 1)
  assert.equal(data.blocked[0].subject, 'mallory')
  assert.equal(data.blocked[0].rule, 'per-user')
  assert.equal(data.blocked[0].role, null)
  assert.ok(data.blocked[0].blocked_for_ms > 25_000 && data.blocked[0].blocked_for_ms <= 30_000)
  // The denial that started the block, and the one after it.
  assert.equal(data.report.totals.blocked, 2)
})
