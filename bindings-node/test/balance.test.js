'use strict'
/**
 * The balancer and the breakers from Node: `pick` by strategy and weight, `Lease` (fields,
 * finish exactly once, outcomes in `upstreams()`), breakers opening, probing and resetting,
 * `breakerEvents`, and the run-time changes (`setUpstreamDown`, `resetBreaker`,
 * `addUpstream`, `removeUpstream`) — as `core/tests/balance.rs` and `breaker.rs` check them.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const v8 = require('node:v8')
const vm = require('node:vm')

const { floodwall, waitUntil } = require('./helpers.js')

const { Engine, Lease, FloodwallError } = floodwall

function engineWith (upstreams, service = {}) {
  return Engine.fromObject({ services: { api: { upstreams, ...service } } })
}

/** `n` picks of `service`, each finished at once as a success; the upstreams' names. */
function picks (engine, n, service = 'api') {
  const names = []
  for (let i = 0; i < n; i++) {
    const lease = engine.pick(service)
    names.push(lease.upstream)
    lease.finish('success', 1)
  }
  return names
}

function status (engine, name, service = 'api') {
  const found = engine.upstreams(service).find((u) => u.name === name)
  assert.ok(found, `no upstream ${name}`)
  return found
}

function counts (names) {
  const out = {}
  for (const name of names) out[name] = (out[name] || 0) + 1
  return out
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

const FLAKY = {
  upstreams: [{ name: 'bad', url: 'http://bad' }, { name: 'good', url: 'http://good' }],
  breaker: { window: 10, min_calls: 4, failure_rate: 0.5, open_for: '5m', half_open_calls: 2 }
}

/** `n` calls where `bad` fails and everything else succeeds; the upstreams picked. */
function runCalls (engine, n) {
  const names = []
  for (let i = 0; i < n; i++) {
    const lease = engine.pick('api')
    names.push(lease.upstream)
    lease.finish(lease.upstream === 'bad' ? 'failure' : 'success', 1)
  }
  return names
}

// --- strategies ------------------------------------------------------------------------------

test('round robin goes round in order', () => {
  const engine = engineWith(['a', 'b', 'c'].map((n) => ({ name: n, url: `http://${n}` })))
  assert.deepEqual(picks(engine, 9), [...'abcabcabc'])
})

test('smooth weighted round robin is exact to the weights over each cycle', () => {
  const engine = engineWith([
    { name: 'a', url: 'http://a', weight: 5 },
    { name: 'b', url: 'http://b', weight: 1 },
    { name: 'c', url: 'http://c', weight: 1 }
  ])
  const sequence = picks(engine, 7 * 20)
  assert.equal(sequence.slice(0, 7).join(''), 'aabacaa', 'nginx\'s smooth order, not five a in a row')
  for (let start = 0; start < sequence.length; start += 7) {
    assert.deepEqual(counts(sequence.slice(start, start + 7)), { a: 5, b: 1, c: 1 })
  }
})

test('least_connections prefers the upstream with fewer calls in flight', () => {
  const engine = engineWith(
    [{ name: 'slow', url: 'http://slow' }, { name: 'fast', url: 'http://fast' }],
    { strategy: 'least_connections' }
  )
  const held = [engine.pick('api'), engine.pick('api')]
  assert.deepEqual(held.map((l) => l.upstream).sort(), ['fast', 'slow'])
  const slow = held.find((l) => l.upstream === 'slow')
  held.find((l) => l.upstream === 'fast').finish('success')
  assert.deepEqual(picks(engine, 20), Array(20).fill('fast'), 'slow has a call in flight')
  assert.equal(status(engine, 'slow').inFlight, 1)
  slow.finish('success')
  assert.equal(status(engine, 'slow').inFlight, 0)
})

test('p2c never picks the loaded upstream of two', () => {
  const engine = engineWith([{ url: 'http://a' }, { url: 'http://b' }], { strategy: 'p2c' })
  const held = engine.pick('api')
  const other = { 'http://a': 'http://b', 'http://b': 'http://a' }[held.upstream]
  assert.deepEqual(counts(picks(engine, 50)), { [other]: 50 })
  held.finish('success')
})

test('upstreams are named by their URL by default', () => {
  const engine = engineWith([{ url: 'http://127.0.0.1:9001' }])
  const lease = engine.pick('api')
  assert.deepEqual([lease.service, lease.upstream, lease.url], ['api', 'http://127.0.0.1:9001', 'http://127.0.0.1:9001'])
  lease.finish('success')
})

test('services are independent', () => {
  const engine = Engine.fromObject({
    services: {
      orders: { upstreams: [{ name: 'o', url: 'http://o' }] },
      users: { upstreams: [{ name: 'u', url: 'http://u' }] }
    }
  })
  assert.deepEqual(picks(engine, 2, 'orders'), ['o', 'o'])
  assert.deepEqual(picks(engine, 2, 'users'), ['u', 'u'])
  engine.setUpstreamDown('orders', 'o')
  assert.deepEqual(picks(engine, 1, 'users'), ['u'])
  assert.equal(thrown(() => engine.setUpstreamDown('users', 'o')).code, 'unknown_upstream')
})

// --- leases ----------------------------------------------------------------------------------

test('lease fields, and finish outcomes in upstreams()', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a', weight: 3 }])
  const lease = engine.pick('api')
  assert.ok(lease instanceof Lease)
  assert.deepEqual([lease.service, lease.upstream, lease.url, lease.isProbe, lease.finished], ['api', 'a', 'http://a', false, false])
  assert.ok(Object.isFrozen(lease))
  let [a] = engine.upstreams('api')
  assert.deepEqual(
    [a.name, a.url, a.weight, a.down, a.state, a.inFlight, a.openUntilMs],
    ['a', 'http://a', 3, false, 'closed', 1, null]
  )
  lease.finish('success', 12.5)
  assert.equal(lease.finished, true)
  ;[a] = engine.upstreams('api')
  assert.deepEqual([a.inFlight, a.calls, a.successes, a.failures, a.timeouts], [0, 1, 1, 0, 0])
  assert.equal(a.meanLatencyUs, 12_500)
  assert.equal(a.maxLatencyUs, 12_500)
  assert.equal(a.failureRate, 0)
  assert.equal(a.slowCallRate, 0)

  engine.pick('api').finish('failure', 2)
  engine.pick('api').finish('timeout', 30)
  engine.pick('api').finish('success', 4)
  ;[a] = engine.upstreams('api')
  assert.deepEqual([a.calls, a.successes, a.failures, a.timeouts, a.inFlight], [4, 2, 1, 1, 0])
  assert.equal(a.maxLatencyUs, 30_000)
  assert.equal(a.meanLatencyUs, (12_500 + 2_000 + 30_000 + 4_000) / 4)
  assert.deepEqual(Object.keys(a).sort(), [
    'calls', 'down', 'failureRate', 'failures', 'inFlight', 'maxLatencyUs', 'meanLatencyUs',
    'name', 'openUntilMs', 'slowCallRate', 'state', 'successes', 'timeouts', 'url', 'weight'
  ])
})

test('failures and timeouts are separate counts', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  engine.pick('api').finish('timeout')
  const a = status(engine, 'a')
  assert.deepEqual([a.failures, a.timeouts, a.calls], [0, 1, 1])
})

test('finishing twice throws, and counts once', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  const lease = engine.pick('api')
  lease.finish('success')
  let error = thrown(() => lease.finish('success'))
  assert.ok(error instanceof Error)
  assert.ok(!(error instanceof FloodwallError))
  assert.match(error.message, /already finished/)
  error = thrown(() => lease.finish('failure', 1))
  assert.match(error.message, /already finished/)
  assert.equal(lease.finished, true)
  const a = status(engine, 'a')
  assert.deepEqual([a.calls, a.successes, a.failures, a.inFlight], [1, 1, 0, 0])
})

test('a bad outcome is a TypeError and leaves the lease open', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  const lease = engine.pick('api')
  for (const outcome of ['ok', 'SUCCESS', '', 'Success ']) {
    const error = thrown(() => lease.finish(outcome))
    assert.ok(error instanceof TypeError, `${outcome}: ${error.constructor.name}`)
    assert.match(error.message, /outcome/)
  }
  for (const latency of [-1, NaN, Infinity, -Infinity]) {
    const error = thrown(() => lease.finish('success', latency))
    assert.ok(error instanceof TypeError, `${latency}: ${error.constructor.name}`)
    assert.match(error.message, /latencyMs/)
  }
  assert.equal(lease.finished, false)
  assert.equal(status(engine, 'a').inFlight, 1)
  lease.finish('timeout', 100)
  const a = status(engine, 'a')
  assert.deepEqual([a.calls, a.timeouts, a.inFlight], [1, 1, 0])
})

test('finish without a latency uses the time since the pick', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  const lease = engine.pick('api')
  lease.finish('success')
  const a = status(engine, 'a')
  assert.equal(a.calls, 1)
  assert.ok(a.maxLatencyUs >= 0)
  assert.ok(Number.isFinite(a.meanLatencyUs))
})

test('a lease collected unfinished counts as a failure', async () => {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc')
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  ;(() => { engine.pick('api') })()
  assert.equal(status(engine, 'a').inFlight, 1)
  const collected = await waitUntil(() => {
    gc()
    return status(engine, 'a').inFlight === 0
  }, { attempts: 200, pauseMs: 10 })
  assert.ok(collected, 'the unfinished lease was never released')
  const a = status(engine, 'a')
  assert.deepEqual([a.inFlight, a.calls, a.failures], [0, 1, 1])
})

// --- breakers --------------------------------------------------------------------------------

test('a failing upstream is skipped once its breaker opens; breakerEvents tells', () => {
  const engine = Engine.fromObject({ services: { api: FLAKY } })
  assert.deepEqual(runCalls(engine, 8), ['bad', 'good', 'bad', 'good', 'bad', 'good', 'bad', 'good'])
  const bad = status(engine, 'bad')
  assert.equal(bad.state, 'open')
  assert.equal(bad.failureRate, 0, 'the window starts afresh when the breaker opens')
  assert.equal(typeof bad.openUntilMs, 'number')
  assert.deepEqual([bad.calls, bad.failures], [4, 4])
  assert.deepEqual(runCalls(engine, 30), Array(30).fill('good'))
  assert.equal(status(engine, 'good').state, 'closed')

  const events = engine.breakerEvents()
  assert.equal(events.length, 1)
  const [event] = events
  assert.deepEqual(
    [event.service, event.upstream, event.from, event.to],
    ['api', 'bad', 'closed', 'open']
  )
  assert.ok(event.seq >= 1)
  assert.equal(event.failureRate, 1)
  assert.equal(event.slowCallRate, 0)
  assert.ok(event.atMs < bad.openUntilMs)
  assert.deepEqual(engine.breakerEvents(event.seq), [])
  assert.deepEqual(engine.breakerEvents(0), events)
})

test('with every breaker open: NoUpstream (no_upstream_available) with availableAtMs', () => {
  const engine = Engine.fromObject({ services: { api: { ...FLAKY, upstreams: [{ name: 'bad', url: 'http://bad' }] } } })
  runCalls(engine, 4)
  const error = thrown(() => engine.pick('api'))
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'no_upstream_available')
  assert.equal(error.status, 503)
  assert.equal(error.availableAtMs, status(engine, 'bad').openUntilMs)
  assert.match(error.message, /bad \(open for/)
})

test('a slow-call rate opens the breaker too', () => {
  const engine = engineWith(
    [{ name: 'slow', url: 'http://slow' }],
    { breaker: { window: 10, min_calls: 4, failure_rate: 0.5, slow_call_duration: '100ms', slow_call_rate: 0.5, open_for: '5m' } }
  )
  for (let i = 0; i < 4; i++) engine.pick('api').finish('success', 250)
  const slow = status(engine, 'slow')
  assert.equal(slow.state, 'open')
  assert.equal(slow.failures, 0)
  const [event] = engine.breakerEvents()
  assert.equal(event.slowCallRate, 1)
  assert.equal(event.failureRate, 0)
})

test('resetBreaker closes it at once, keeping the statistics', () => {
  const engine = Engine.fromObject({ services: { api: FLAKY } })
  runCalls(engine, 8)
  assert.equal(status(engine, 'bad').state, 'open')
  engine.resetBreaker('api', 'bad')
  const bad = status(engine, 'bad')
  assert.deepEqual([bad.state, bad.openUntilMs, bad.failureRate], ['closed', null, 0])
  assert.equal(bad.calls, 4, 'statistics are kept')
  assert.ok(picks(engine, 2).includes('bad'))
  const [opened, closed] = engine.breakerEvents()
  assert.ok(closed.seq > opened.seq)
  assert.deepEqual([closed.from, closed.to, closed.upstream], ['open', 'closed', 'bad'])
  assert.deepEqual(engine.breakerEvents(opened.seq).map((e) => [e.seq, e.to]), [[closed.seq, 'closed']])
  engine.resetBreaker('api', 'good')
  assert.equal(engine.breakerEvents().length, 2, 'resetting a closed breaker changes nothing')
})

test('an open breaker lets probes through after open_for', async () => {
  const engine = engineWith([{ name: 'only', url: 'http://only' }], {
    breaker: { window: 10, min_calls: 2, failure_rate: 0.5, open_for: '100ms', half_open_calls: 1 }
  })
  for (let i = 0; i < 2; i++) engine.pick('api').finish('failure')
  assert.equal(status(engine, 'only').state, 'open')
  assert.ok(await waitUntil(() => status(engine, 'only').state === 'half_open'), 'never half-open')
  const probe = engine.pick('api')
  assert.equal(probe.isProbe, true)
  const error = thrown(() => engine.pick('api'))
  assert.equal(error.code, 'no_upstream_available', 'the one probe slot is taken')
  probe.finish('success', 1)
  assert.equal(status(engine, 'only').state, 'closed')
  assert.deepEqual(engine.breakerEvents().map((e) => [e.from, e.to]), [['closed', 'open'], ['open', 'half_open'], ['half_open', 'closed']])
  const lease = engine.pick('api')
  assert.equal(lease.isProbe, false)
  lease.finish('success')
})

test('a failed probe opens the breaker again', async () => {
  const engine = engineWith([{ name: 'only', url: 'http://only' }], {
    breaker: { window: 10, min_calls: 2, failure_rate: 0.5, open_for: '100ms', half_open_calls: 1 }
  })
  for (let i = 0; i < 2; i++) engine.pick('api').finish('failure')
  assert.ok(await waitUntil(() => status(engine, 'only').state === 'half_open'), 'never half-open')
  const probe = engine.pick('api')
  assert.equal(probe.isProbe, true)
  probe.finish('failure', 1)
  assert.equal(status(engine, 'only').state, 'open')
  assert.deepEqual(engine.breakerEvents().map((e) => e.to), ['open', 'half_open', 'open'])
})

// --- run-time changes ------------------------------------------------------------------------

test('setUpstreamDown and up again', () => {
  const engine = engineWith(['a', 'b'].map((n) => ({ name: n, url: `http://${n}` })))
  engine.setUpstreamDown('api', 'a')
  assert.equal(status(engine, 'a').down, true)
  assert.deepEqual(picks(engine, 6), Array(6).fill('b'))
  engine.setUpstreamDown('api', 'b', true)
  const error = thrown(() => engine.pick('api'))
  assert.equal(error.code, 'no_upstream_available')
  assert.equal(error.availableAtMs, null)
  engine.setUpstreamDown('api', 'a', false)
  assert.equal(status(engine, 'a').down, false)
  assert.deepEqual(picks(engine, 3), ['a', 'a', 'a'])
  engine.setUpstreamDown('api', 'b', false)
  assert.deepEqual(picks(engine, 4).sort(), ['a', 'a', 'b', 'b'])
})

test('addUpstream', () => {
  const engine = engineWith([{ name: 'a', url: 'http://a' }])
  engine.addUpstream('api', 'http://b', { name: 'b', weight: 2 })
  engine.addUpstream('api', 'http://c')
  assert.deepEqual(engine.upstreams('api').map((u) => [u.name, u.url, u.weight]), [
    ['a', 'http://a', 1], ['b', 'http://b', 2], ['http://c', 'http://c', 1]
  ])
  assert.deepEqual(counts(picks(engine, 8)), { a: 2, b: 4, 'http://c': 2 })
  let error = thrown(() => engine.addUpstream('api', 'http://other', { name: 'b' }))
  assert.equal(error.code, 'invalid_config')
  assert.equal(error.field, 'upstream.name')
  error = thrown(() => engine.addUpstream('api', 'http://d', { weight: 0 }))
  assert.equal(error.code, 'invalid_config')
  assert.equal(error.field, 'upstream.weight')
  error = thrown(() => engine.addUpstream('api', ''))
  assert.equal(error.code, 'invalid_config')
  assert.equal(engine.upstreams('api').length, 3)
})

for (const weight of [-1, 2 ** 32 + 2, 2.5]) {
  test(`addUpstream refuses weight ${weight} (not a whole number from 1), without wrapping it`, () => {
    const engine = engineWith([{ name: 'a', url: 'http://a' }])
    let error = null
    try {
      engine.addUpstream('api', 'http://w', { weight })
    } catch (e) {
      error = e
    }
    assert.deepEqual(engine.upstreams('api').map((u) => [u.name, u.weight]), [['a', 1]], 'nothing was added')
    assert.ok(error instanceof TypeError || (error instanceof FloodwallError && error.code === 'invalid_config'), String(error))
    assert.ok(!error.message.includes('4294967295'), `the message shows the wrapped weight: ${error.message}`)
  })
}

test('removeUpstream', () => {
  const engine = engineWith(['a', 'b'].map((n) => ({ name: n, url: `http://${n}` })))
  const inFlight = engine.pick('api')
  assert.equal(inFlight.upstream, 'a')
  engine.removeUpstream('api', 'a')
  assert.deepEqual(engine.upstreams('api').map((u) => u.name), ['b'])
  assert.deepEqual(picks(engine, 4), ['b', 'b', 'b', 'b'])
  inFlight.finish('success') // a lease on a removed upstream finishes normally
  let error = thrown(() => engine.removeUpstream('api', 'b'))
  assert.equal(error.code, 'invalid_config')
  assert.match(error.message, /last upstream/)
  error = thrown(() => engine.removeUpstream('api', 'a'))
  assert.equal(error.code, 'unknown_upstream')
  engine.addUpstream('api', 'http://a2', { name: 'a' })
  assert.equal(status(engine, 'a').calls, 0, 'a new upstream under an old name starts afresh')
  assert.equal(status(engine, 'a').url, 'http://a2')
})
