'use strict'
/**
 * Monitoring through the engine: `report()` (its keys in the document's order, and the counts
 * after checks, refusals, failures, upstream calls and recorded responses), `prometheus()`,
 * and `recordResponse` (what it refuses). What the Express middlewares record is in
 * `express.test.js`.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')

const { floodwall, mint, hs256Auth, NEW_SECRET } = require('./helpers.js')

const { Engine, FloodwallError, PROMETHEUS_CONTENT_TYPE } = floodwall

/**
 * A minute's start within the first hour of 2100: decisions dated then land in a minute of their
 * own, apart from what happens at the engine's clock — decades earlier, and half an hour away in
 * the report's ring of 60 minutes whenever the test runs (a minute sharing the clock's slot would
 * push the clock's events out of the ring).
 */
const AT = (() => {
  const start = 4_102_444_800_000 / 60_000 // 2100-01-01 00:00 UTC, in minutes since the epoch
  const now = Math.floor(Date.now() / 60_000)
  return (start + ((((now + 30 - start) % 60) + 60) % 60)) * 60_000
})()

const config = () => ({
  auth: hs256Auth(undefined, { default_role: 'free' }),
  rules: [{
    name: 'per-user',
    key: 'subject',
    algorithm: 'fixed_window',
    limit: 2,
    window: '1m',
    roles: { premium: { limit: 5 } }
  }],
  services: {
    api: {
      upstreams: [
        { name: 'a', url: 'http://127.0.0.1:9001' },
        { name: 'b', url: 'http://127.0.0.1:9002' }
      ]
    }
  }
})

/**
 * An engine that saw, dated `AT`: alice admitted twice and limited once, a forged token,
 * premium bob admitted, a request too costly ever to pass; then, at its clock, one upstream
 * call that timed out and three responses (200, 429, 503). Answers the engine and the
 * upstream that timed out.
 */
function busyEngine () {
  const engine = Engine.fromObject(config())
  const allowed = [0, 1, 2].map(() =>
    engine.checkSync({ subject: 'alice', role: 'free', method: 'get', path: '/api/orders?page=2', nowMs: AT }).allowed)
  assert.deepEqual(allowed, [true, true, false])
  assert.throws(
    () => engine.authorizeSync(mint('mallory', { secret: NEW_SECRET }), { method: 'POST', path: '/api/orders', nowMs: AT }),
    (error) => error instanceof FloodwallError && error.code === 'bad_signature')
  assert.ok(engine.authorizeSync(mint('bob', { role: 'premium' }), { method: 'GET', path: '/api/items', nowMs: AT }).decision.allowed)
  assert.throws(
    () => engine.checkSync({ subject: 'carol', method: 'GET', path: '/api/orders', cost: 100, nowMs: AT }),
    (error) => error instanceof FloodwallError && error.code === 'cost_exceeds_limit')
  const lease = engine.pick('api')
  lease.finish('timeout', 3)
  engine.recordResponse('GET', '/api/orders?page=2', 200, 1.5)
  engine.recordResponse('GET', '/api/orders', 429, 0.3)
  engine.recordResponse('POST', '/api/orders', 503, 2500)
  return { engine, timedOut: lease.upstream }
}

/** A top list as `{ key: count }`, every count exact. */
function entries (top) {
  for (const entry of top) assert.equal(entry.error, 0, JSON.stringify(entry))
  return Object.fromEntries(top.map((entry) => [entry.key, entry.count]))
}

test('the report counts what the engine saw', () => {
  const { engine, timedOut } = busyEngine()
  const report = engine.report({ nowMs: AT + 30_000 })

  assert.equal(report.generated_at_ms, AT + 30_000)
  assert.equal(report.horizon_minutes, 60)
  assert.deepEqual([report.source, report.store_kind, report.store_failure, report.sink], ['memory', 'memory', null, null])

  const minute = {
    start_ms: AT,
    requests: 6,
    admitted: 3,
    rate_limited: 1,
    auth_rejected: 1,
    failed: 1,
    denied: 0,
    shadow_limited: 0,
    allowlisted: 0,
    blocked: 0,
    upstream_calls: 0,
    upstream_failures: 0,
    breaker_trips: 0,
    responses: 0,
    client_errors: 0,
    server_errors: 0,
    latency_p50_us: 0,
    latency_p99_us: 0,
    mean_latency_us: 0,
    max_latency_us: 0
  }
  assert.deepEqual(report.per_minute, [minute])
  assert.deepEqual(report.peaks, [minute])

  const totals = report.totals
  assert.ok(totals.latency_p50_us >= 1000 && totals.latency_p50_us <= 2500, 'the median (1.5 ms) lies in the 1–2.5 ms bucket')
  assert.deepEqual(totals, {
    ...minute,
    start_ms: 0,
    upstream_calls: 1,
    upstream_failures: 1,
    responses: 3,
    client_errors: 1,
    server_errors: 1,
    latency_p50_us: totals.latency_p50_us,
    latency_p99_us: totals.latency_p99_us,
    mean_latency_us: Math.floor((1500 + 300 + 2_500_000) / 3),
    max_latency_us: 2_500_000
  })

  assert.deepEqual(entries(report.top_endpoints), { 'GET /api/orders': 4, 'POST /api/orders': 1, 'GET /api/items': 1 })
  assert.deepEqual(entries(report.top_subjects), { alice: 3, bob: 1, carol: 1 })
  assert.deepEqual(entries(report.breaches_by_subject), { alice: 1 })
  assert.deepEqual(entries(report.breaches_by_role), { free: 1 })
  assert.deepEqual(entries(report.breaches_by_endpoint), { 'GET /api/orders': 1 })
  assert.deepEqual(entries(report.breaches_by_rule), { 'per-user': 1 })
  assert.deepEqual(report.auth_rejections, { bad_signature: 1 })
  assert.deepEqual(report.errors, { cost_exceeds_limit: 1 })
  assert.deepEqual(entries(report.upstream_failures), { [`api/${timedOut}`]: 1 })
  assert.deepEqual(report.breaker_trips, [])
  assert.deepEqual(report.stores, { memory: 4 }, 'the failed and refused decisions used no store')
  assert.deepEqual(report.status_classes, { '2xx': 1, '4xx': 1, '5xx': 1 })

  const histogram = report.response_latency
  assert.deepEqual(histogram.bounds_us.slice(0, 4), [100, 250, 500, 1000])
  assert.equal(histogram.counts.length, histogram.bounds_us.length + 1)
  const filled = {}
  histogram.bounds_us.forEach((bound, i) => { if (histogram.counts[i]) filled[bound] = histogram.counts[i] })
  assert.deepEqual(filled, { 500: 1, 2500: 1, 2500000: 1 })
  assert.deepEqual([histogram.count, histogram.sum_us], [3, 1500 + 300 + 2_500_000])
})

test('the report has the documented keys in the document\'s order', () => {
  const { engine } = busyEngine()
  const report = engine.report()
  assert.deepEqual(Object.keys(report), [
    'generated_at_ms', 'horizon_minutes', 'source', 'store_kind', 'store_failure', 'per_minute',
    'peaks', 'totals', 'top_endpoints', 'top_subjects', 'breaches_by_subject', 'breaches_by_role',
    'breaches_by_endpoint', 'breaches_by_rule', 'shadow_breaches_by_rule', 'auth_rejections',
    'errors', 'upstream_failures', 'breaker_trips', 'stores', 'status_classes', 'response_latency',
    'sink', 'warnings'
  ])
  assert.deepEqual(Object.keys(report.totals), [
    'start_ms', 'requests', 'admitted', 'rate_limited', 'auth_rejected', 'failed', 'denied',
    'shadow_limited', 'allowlisted', 'blocked', 'upstream_calls', 'upstream_failures', 'breaker_trips', 'responses', 'client_errors',
    'server_errors', 'latency_p50_us', 'latency_p99_us', 'mean_latency_us', 'max_latency_us'
  ])
  assert.deepEqual(Object.keys(report.top_endpoints[0]), ['key', 'count', 'error'])
  assert.deepEqual(Object.keys(report.response_latency), ['bounds_us', 'counts', 'sum_us', 'count'])
})

test('the report at the clock holds this minute\'s responses, not the minute dated 2100', () => {
  const { engine } = busyEngine()
  const minutes = engine.report().per_minute
  // The call and the responses are in the current minute (or two, should a minute turn).
  assert.ok(minutes.length >= 1 && minutes.length <= 2, JSON.stringify(minutes))
  const sum = (field) => minutes.reduce((n, m) => n + m[field], 0)
  assert.deepEqual([sum('requests'), sum('responses'), sum('upstream_calls')], [0, 3, 1])
  assert.equal(engine.report().totals.requests, 6)
})

test('a fresh engine reports nothing', () => {
  const report = Engine.fromObject({}).report()
  assert.deepEqual([report.per_minute, report.peaks, report.top_endpoints], [[], [], []])
  assert.deepEqual([report.totals.requests, report.totals.responses], [0, 0])
  assert.deepEqual(report.status_classes, {})
})

test('a bad report option is a TypeError', () => {
  const engine = Engine.fromObject({})
  for (const nowMs of [-1, 1.5, 'soon']) {
    assert.throws(() => engine.report({ nowMs }), (error) => error instanceof TypeError && /nowMs/.test(error.message), String(nowMs))
  }
  assert.throws(() => engine.report('soon'), TypeError)
  assert.equal(engine.report(null).totals.requests, 0)
})

test('prometheus renders the counters', () => {
  const { engine, timedOut } = busyEngine()
  const lines = engine.prometheus().split('\n')
  for (const line of [
    '# TYPE floodwall_decisions_total counter',
    'floodwall_decisions_total{outcome="admitted"} 3',
    'floodwall_decisions_total{outcome="rate_limited"} 1',
    'floodwall_decisions_total{outcome="auth_rejected"} 1',
    'floodwall_decisions_total{outcome="failed"} 1',
    'floodwall_rate_limited_total{rule="per-user"} 1',
    'floodwall_auth_rejections_total{reason="bad_signature"} 1',
    'floodwall_decision_errors_total{kind="cost_exceeds_limit"} 1',
    'floodwall_responses_total{class="4xx"} 1',
    '# TYPE floodwall_response_duration_seconds histogram',
    'floodwall_response_duration_seconds_bucket{le="+Inf"} 3',
    'floodwall_response_duration_seconds_count 3',
    `floodwall_upstream_calls_total{service="api",upstream="${timedOut}",outcome="timeout"} 1`,
    'floodwall_upstream_in_flight{service="api",upstream="a"} 0'
  ]) {
    assert.ok(lines.includes(line), line)
  }
  assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8')
})

test('recordResponse refuses bad arguments with a TypeError naming them', () => {
  const engine = Engine.fromObject({})
  const cases = [
    [['GET', '/', 99, 1], /status must be an HTTP status, an integer from 100 to 999, not 99/],
    [['GET', '/', 1000, 1], /not 1000/],
    [['GET', '/', 200.5, 1], /not 200.5/],
    [['GET', '/', NaN, 1], /not NaN/],
    [['GET', '/', '200', 1], /status must be a number/],
    [['GET', '/', undefined, 1], /status must be a number/],
    [['GET', '/', 200, -0.5], /latencyMs must be a finite number >= 0, not -0.5/],
    [['GET', '/', 200, Infinity], /not inf/],
    [['GET', '/', 200, '1'], /latencyMs must be a number/],
    [['GET', '/', 200], /latencyMs must be a number/],
    [[null, '/', 200, 1], /method must be a string/],
    [['GET', 7, 200, 1], /path must be a string/],
    [[], /method must be a string/]
  ]
  for (const [args, message] of cases) {
    assert.throws(() => engine.recordResponse(...args), (error) => error instanceof TypeError && message.test(error.message), JSON.stringify(args))
  }
  assert.equal(engine.report().totals.responses, 0, 'nothing refused is counted')
})

test('recordResponse takes fractional milliseconds to the microsecond', () => {
  const engine = Engine.fromObject({})
  engine.recordResponse('GET', '/', 204, 2)
  engine.recordResponse('GET', '/', 204, 1.001) // not 1000.999… µs, counted down to 1000
  const report = engine.report()
  assert.deepEqual([report.totals.responses, report.totals.max_latency_us], [2, 2000])
  assert.equal(report.response_latency.sum_us, 3001)
})
