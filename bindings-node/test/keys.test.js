'use strict'
/*
 * Per-key administration from Node: inspect, resetKey, blockKey, penalize, reward — on the
 * memory store, and on Redis where another engine sees it.
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
  assert.deepEqual({ ...status }, { limit: 5, remaining: 4, resetAfterMs: status.resetAfterMs, blockedForMs: null, store: status.store })
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

  describe('on Redis', () => {
    let server
    before(async () => { server = await RedisServer.start() })
    after(async () => { if (server) await server.stop() })

    test('another engine sees what one administers', async () => {
      assert.ok(server, 'redis-server did not start')
      const config = { ...RULES, store: redisStore(server, { prefix: 'nodekeys:', deny_cache: false }) }
      await administer(Engine.fromObject(config), Engine.fromObject(config))
    })
  })
})
