'use strict'
/*
 * Hot reload from Node: counts carried over or restarted, the summary, errors that change
 * nothing, a running Express app picking up new rules and the headers they read — on the
 * memory store and on Redis.
 */
const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { floodwall, redisStore } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')
const H = require('./express_http.js')
const { Engine, FloodwallError } = floodwall
const { rateLimit } = require('floodwall/express')

const PER_USER = { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 3, window: '1h' }
const PER_KEY = { name: 'per-key', key: 'header:x-api-key', algorithm: 'fixed_window', limit: 1, window: '1h' }

async function carryOver (engine, base) {
  assert.equal((await engine.check({ subject: 'bob' })).remaining, 2)
  const summary = engine.reload({ ...base, rules: [{ ...PER_KEY, limit: 10 }, PER_USER] })
  assert.deepEqual(summary.rules, [{ name: 'per-key', change: 'added' }, { name: 'per-user', change: 'unchanged' }])
  assert.deepEqual(engine.rules, ['per-key', 'per-user'])
  const decision = await engine.check({ subject: 'bob' })
  assert.equal(decision.remaining, 1)
  assert.equal(decision.rule, 'per-user')
  const changed = engine.reload({ ...base, rules: [{ ...PER_USER, limit: 5 }] })
  assert.deepEqual(changed.rules.map((r) => r.change), ['restarted', 'removed'])
  assert.equal((await engine.check({ subject: 'bob' })).remaining, 4)
}

describe('reload', () => {
  test('keeps an unchanged rule\'s count and restarts a changed one', async () => {
    await carryOver(Engine.fromObject({ rules: [PER_USER] }), {})
  })

  test('changes nothing on an invalid configuration and names the field', () => {
    const engine = Engine.fromObject({ rules: [PER_USER] })
    engine.checkSync({ subject: 'bob' })
    assert.throws(() => engine.reload({ rules: [{ ...PER_USER, limit: 0 }] }),
      (e) => e instanceof FloodwallError && e.code === 'invalid_config' && e.field === 'rules[0].limit')
    assert.throws(() => engine.reload({ rules: [PER_USER], monitor: { horizon: '5m' } }),
      (e) => e instanceof FloodwallError && e.field === 'monitor.horizon')
    assert.throws(() => engine.reloadToml('[[rules]]\nname = '), FloodwallError)
    assert.throws(() => engine.reloadFile('/nonexistent/floodwall.toml'), FloodwallError)
    assert.throws(() => engine.reload('rules'), TypeError)
    assert.equal(engine.checkSync({ subject: 'bob' }).remaining, 1)
    assert.deepEqual(engine.rules, ['per-user'])
  })

  test('from a file, and a running Express app reads the new rules\' headers', async () => {
    const engine = Engine.fromObject({ rules: [PER_USER] })
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-reload-'))
    const file = path.join(dir, 'floodwall.toml')
    fs.writeFileSync(file, '[[rules]]\nname = "per-key"\nkey = "header:x-api-key"\nalgorithm = "fixed_window"\nlimit = 1\nwindow = "1h"\n')
    const server = await H.listen(H.makeApp([rateLimit(engine)]))
    try {
      const get = (headers) => H.request(server.port, { path: '/keyed', headers })
      assert.equal((await get({ 'x-api-key': 'k1' })).status, 200)
      assert.equal((await get({ 'x-api-key': 'k1' })).status, 200, 'no rule reads the header yet')
      const summary = engine.reloadFile(file)
      assert.deepEqual(summary.rules[0], { name: 'per-key', change: 'added' })
      assert.equal(summary.generations, 2)
      assert.equal((await get({ 'x-api-key': 'k1' })).status, 200)
      const denied = await get({ 'x-api-key': 'k1' })
      assert.equal(denied.status, 429)
      assert.equal(H.assertProblem(denied, 429, 'rate_limited').rule, 'per-key')
      assert.deepEqual(engine.reloadJson('{"rules": []}').rules, [{ name: 'per-key', change: 'removed' }])
      assert.equal((await get({ 'x-api-key': 'k1' })).status, 200)
    } finally {
      await server.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  describe('on Redis', () => {
    let server
    before(async () => { server = await RedisServer.start() })
    after(async () => { if (server) await server.stop() })

    test('keeps and restarts as on the memory store; an engine on the old limit counts apart', async () => {
      assert.ok(server, 'redis-server did not start')
      const base = { store: redisStore(server, { prefix: 'nodereload:' }) }
      const engine = Engine.fromObject({ ...base, rules: [PER_USER] })
      await carryOver(engine, base)
      const old = Engine.fromObject({ ...base, rules: [PER_USER] })
      assert.equal((await old.check({ subject: 'bob' })).remaining, 0)
    })
  })
})
