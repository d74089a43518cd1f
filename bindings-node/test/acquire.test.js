'use strict'
/*
 * Waiting for capacity from Node: `engine.acquire(request, maxWaitMs)` on the memory store
 * and on Redis, and concurrency places released while a waiter waits. Every wait is bounded
 * by its maxWaitMs; the assertions are about what is admitted.
 */
const { test, describe, before, after } = require('node:test')
const assert = require('node:assert')
const { Engine, FloodwallError } = require('..')
const { redisStore } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')

const WINDOW = { rules: [{ name: 'r', key: 'subject', algorithm: 'fixed_window', limit: 1, window: '100ms' }] }
const IN_FLIGHT = { rules: [{ name: 'c', key: 'subject', algorithm: 'concurrency', limit: 1 }] }

describe('acquire on the memory store', () => {
  test('a denied request waits for the next window; a short wait answers the denial', async () => {
    const engine = Engine.fromObject(WINDOW)
    assert.ok(engine.checkSync({ subject: 'alice' }).allowed)
    const waited = await engine.acquire({ subject: 'alice' }, 5000)
    assert.ok(waited.allowed)
    const slow = Engine.fromObject({ rules: [{ ...WINDOW.rules[0], algorithm: 'sliding_window', window: '1h' }] })
    assert.ok(slow.checkSync({ subject: 'bob' }).allowed)
    const denied = await slow.acquire({ subject: 'bob' }, 20)
    assert.equal(denied.allowed, false)
    assert.ok(denied.retryAfterMs > 3_000_000)
  })

  test('waiters of one key are each admitted in a window of their own', async () => {
    const engine = Engine.fromObject(WINDOW)
    assert.ok(engine.checkSync({ subject: 'carol' }).allowed)
    const times = await Promise.all([0, 1, 2].map(async () => {
      const d = await engine.acquire({ subject: 'carol' }, 5000)
      assert.ok(d.allowed)
      return Math.floor(Date.now() / 100)
    }))
    assert.equal(new Set(times).size, 3, times.join(', '))
  })

  test('a waiter for a concurrency place is admitted when it is released', async () => {
    const engine = Engine.fromObject(IN_FLIGHT)
    const held = engine.checkSync({ subject: 'dave' })
    assert.ok(held.holds)
    setTimeout(() => { held.release() }, 30)
    const waited = await engine.acquire({ subject: 'dave' }, 5000)
    assert.ok(waited.allowed && waited.holds)
    assert.equal(await waited.release(), true)
  })

  test('bad arguments are rejected', async () => {
    const engine = Engine.fromObject(WINDOW)
    await assert.rejects(engine.acquire({ subject: 'x' }, 'soon'), TypeError)
    await assert.rejects(engine.acquire({ subject: 'x' }, -1), (e) => e instanceof TypeError || e instanceof FloodwallError)
  })
})

describe('acquire on Redis', () => {
  let server
  before(async () => { server = await RedisServer.start() })
  after(async () => { if (server) await server.stop() })

  test('waits for the next window, off the JS thread', async () => {
    assert.ok(server, 'redis-server did not start')
    const engine = Engine.fromObject({ ...WINDOW, store: redisStore(server, { on_error: 'deny' }) })
    assert.ok((await engine.check({ subject: 'erin' })).allowed)
    let ticks = 0
    const timer = setInterval(() => { ticks++ }, 5)
    const waited = await engine.acquire({ subject: 'erin' }, 5000)
    clearInterval(timer)
    assert.ok(waited.allowed && waited.store === 'redis', JSON.stringify(waited))
    assert.ok(ticks > 0, 'the event loop ran while acquire waited')
  })
})
