'use strict'
/*
 * Per-key administration from Node: inspect, resetKey, blockKey, penalize, reward and a key's
 * own limit (setKeyLimit, clearKeyLimit) — on the memory store, and on Redis where another
 * engine sees it.
 */
const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { floodwall, redisStore } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')
const { Engine, FloodwallError } = floodwall

const RULES = {
  rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 5, window: '1h', block_for: '10m', block_after: 3 }]
}

async function administer (engine, other) {
  assert.ok((await other.check({ subject: 'alice' })).allowed)
  const status = await engine.inspect('per-user', 'alice')
  assert.deepEqual({ ...status }, { limit: 5, remaining: 4, resetAfterMs: status.resetAfterMs, blockedForMs: null, keyLimitForMs: null, store: status.store })
  await engine.penalize('per-user', 'alice', 4)
  assert.equal((await other.inspect('per-user', 'alice')).remaining, 0)
  await engine.reward('per-user', 'alice', 2)
  assert.ok((await other.check({ subject: 'alice' })).allowed)
  await engine.blockKey('per-user', 'alice', 60_000)
  const blocked = await other.check({ subject: 'alice' })
  assert.ok(!blocked.allowed && blocked.blocked)
  const left = (await engine.inspect('per-user', 'alice')).blockedForMs
  assert.ok(left > 50_000 && left <= 60_000, `${left}`)
  await engine.resetKey('per-user', 'alice')
  assert.equal((await other.inspect('per-user', 'alice')).remaining, 5)
}

const LIMITED = {
  rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 3, window: '1h', key_limits: true }]
}

// A key's own limit, set on `engine`, judges its requests on `other` until cleared.
async function ownLimit (engine, other) {
  assert.equal((await other.inspect('per-user', 'bob')).keyLimitForMs, null)
  await engine.setKeyLimit('per-user', 'bob', 5, 60_000)
  const status = await other.inspect('per-user', 'bob')
  assert.equal(status.limit, 5)
  assert.equal(status.remaining, 5)
  assert.equal(status.blockedForMs, null)
  assert.ok(status.keyLimitForMs > 50_000 && status.keyLimitForMs <= 60_000, `${status.keyLimitForMs}`)
  for (let i = 0; i < 5; i++) {
    const decision = await other.check({ subject: 'bob' })
    assert.ok(decision.allowed, `request ${i + 1} of 5`)
    assert.equal(decision.limit, 5)
  }
  const denied = await other.check({ subject: 'bob' })
  assert.ok(!denied.allowed)
  assert.equal(denied.limit, 5)
  // Another key keeps the rule's limit.
  const carol = await other.check({ subject: 'carol' })
  assert.ok(carol.allowed)
  assert.equal(carol.limit, 3)

  await engine.clearKeyLimit('per-user', 'bob')
  const cleared = await other.inspect('per-user', 'bob')
  assert.equal(cleared.limit, 3)
  assert.equal(cleared.keyLimitForMs, null)
  assert.equal(cleared.remaining, 0)
  assert.equal((await other.check({ subject: 'bob' })).limit, 3)
  // Clearing a key without one does nothing.
  await engine.clearKeyLimit('per-user', 'carol')
  assert.equal((await other.inspect('per-user', 'carol')).limit, 3)
}

describe('per-key administration', () => {
  test('on the memory store', async () => {
    const engine = Engine.fromObject(RULES)
    await administer(engine, engine)
  })

  test('errors name what is wrong', async () => {
    const engine = Engine.fromObject(RULES)
    await assert.rejects(engine.inspect('nope', 'alice'), (e) => e instanceof FloodwallError && e.code === 'unknown_rule' && e.message.includes('per-user'))
    await assert.rejects(engine.penalize('per-user', 'alice', -1), TypeError)
    await assert.rejects(engine.inspect('per-user', 'alice', 'premium'), TypeError)
  })

  test('a key\'s own limit on the memory store', async () => {
    const engine = Engine.fromObject(LIMITED)
    await ownLimit(engine, engine)
  })

  test('a key\'s own limit from TOML', async () => {
    const engine = Engine.fromToml(`
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1h"
key_limits = true
`)
    await engine.setKeyLimit('per-user', 'dave', 5, 1000)
    const status = await engine.inspect('per-user', 'dave')
    assert.equal(status.limit, 5)
    assert.ok(status.keyLimitForMs > 0 && status.keyLimitForMs <= 1000, `${status.keyLimitForMs}`)
  })

  test('key limits: errors name what is wrong', async () => {
    const plain = Engine.fromObject(RULES)
    const noKeyLimits = (e) => e instanceof FloodwallError && e.code === 'invalid_config' && e.message.includes('takes no key limits')
    await assert.rejects(plain.setKeyLimit('per-user', 'alice', 10, 60_000), noKeyLimits)
    await assert.rejects(plain.clearKeyLimit('per-user', 'alice'), noKeyLimits)
    assert.equal((await plain.inspect('per-user', 'alice')).keyLimitForMs, null)

    const engine = Engine.fromObject(LIMITED)
    const invalid = (e) => e instanceof FloodwallError && e.code === 'invalid_config'
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 0, 60_000), invalid)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5, 0), invalid)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5, 367 * 86_400_000), invalid)
    await assert.rejects(engine.setKeyLimit('nope', 'alice', 5, 60_000), (e) => e instanceof FloodwallError && e.code === 'unknown_rule')
    await assert.rejects(engine.clearKeyLimit('nope', 'alice'), (e) => e instanceof FloodwallError && e.code === 'unknown_rule')
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', -1, 60_000), TypeError)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 2.5, 60_000), TypeError)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', '5', 60_000), TypeError)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5), TypeError)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5, -1), TypeError)
    await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5, 60_000, 'premium'), TypeError)
    await assert.rejects(engine.clearKeyLimit('per-user', 'alice', 'premium'), TypeError)
    await assert.rejects(engine.setKeyLimit(7, 'alice', 5, 60_000), TypeError)
    // Nothing was set by the refusals.
    assert.equal((await engine.inspect('per-user', 'alice')).limit, 3)
  })

  describe('on Redis', () => {
    let server
    before(async () => { server = await RedisServer.start() })
    after(async () => { if (server) await server.stop() })

    test('another engine sees what one administers', async () => {
      assert.ok(server, 'redis-server did not start')
      const config = { ...RULES, store: redisStore(server, { prefix: 'nodekeys:', deny_cache: false }) }
      await administer(Engine.fromObject(config), Engine.fromObject(config))
    })

    test('another engine judges a key by the limit one sets', async () => {
      assert.ok(server, 'redis-server did not start')
      const config = { ...LIMITED, store: redisStore(server, { prefix: 'nodekeylimits:', deny_cache: false }) }
      await ownLimit(Engine.fromObject(config), Engine.fromObject(config))
    })

    test('a rule without key_limits refuses them on Redis too', async () => {
      assert.ok(server, 'redis-server did not start')
      const engine = Engine.fromObject({ ...RULES, store: redisStore(server, { prefix: 'nodekeylimits2:' }) })
      await assert.rejects(engine.setKeyLimit('per-user', 'alice', 5, 60_000),
        (e) => e instanceof FloodwallError && e.code === 'invalid_config' && e.message.includes('takes no key limits'))
      await assert.rejects(engine.setKeyLimit('per-user', 'alice', 0, 60_000), (e) => e instanceof FloodwallError && e.code === 'invalid_config')
    })
  })
})
