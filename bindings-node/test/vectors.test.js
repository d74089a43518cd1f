'use strict'
/**
 * The conformance vectors (`tests/vectors/*.json`, format in its README) through the binding:
 * every step of every case on a fresh engine, on the memory store with `checkSync`, and on a
 * real Redis with `await check` — as `tests/vectors.rs` and `tests/redis_vectors.rs` run them
 * in Rust (Redis: the vectors' explicit times on the caller's clock, a key prefix per case,
 * `on_error = "deny"` so that a failing store cannot pass for a working one, the denial cache
 * off and on).
 */

const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')

const { floodwall, VECTORS, redisStore } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')

const { Engine, Decision, FloodwallError } = floodwall

/** The vectors' request fields, each as the JS request names it. */
const REQUEST_FIELDS = {
  subject: 'subject',
  role: 'role',
  method: 'method',
  path: 'path',
  ip: 'ip',
  headers: 'headers',
  cost: 'cost'
}
/** The vectors' expected decision fields, each as `Decision` names it. */
const EXPECT_FIELDS = {
  allowed: 'allowed',
  rule: 'rule',
  limit: 'limit',
  remaining: 'remaining',
  reset_after_ms: 'resetAfterMs',
  retry_after_ms: 'retryAfterMs',
  blocked: 'blocked'
}

function loadCases () {
  const cases = []
  for (const file of fs.readdirSync(VECTORS).filter((f) => f.endsWith('.json')).sort()) {
    const document = JSON.parse(fs.readFileSync(path.join(VECTORS, file), 'utf8'))
    assert.equal(document.format, 1, `${file}: unknown format`)
    for (const c of document.cases) cases.push({ ...c, file })
  }
  return cases
}

const CASES = loadCases()

/** A vector step's request in the shape `check` takes. */
function toRequest (step, label) {
  const request = step.request || {}
  const unknown = Object.keys(request).filter((k) => !(k in REQUEST_FIELDS))
  assert.deepEqual(unknown, [], `${label}: unknown request fields`)
  const out = { nowMs: step.now_ms }
  for (const [from, to] of Object.entries(REQUEST_FIELDS)) {
    if (from in request) out[to] = request[from]
  }
  return out
}

/** Every mismatch between `result` (a Decision or a thrown error) and `expect`. */
function mismatches (result, expect, store) {
  const wrong = []
  if (result instanceof Error) {
    if (!('error' in expect)) {
      wrong.push(`threw ${result.name} ${result.code}: ${result.message}`)
    } else if (!(result instanceof FloodwallError)) {
      wrong.push(`threw ${result.name} (not a FloodwallError): ${result.message}`)
    } else if (result.code !== expect.error) {
      wrong.push(`error ${result.code} (${result.message}) instead of ${expect.error}`)
    }
    return wrong
  }
  if ('error' in expect) {
    wrong.push(`${JSON.stringify(result)} instead of error ${expect.error}`)
    return wrong
  }
  if (!(result instanceof Decision)) {
    wrong.push(`not a Decision: ${result}`)
    return wrong
  }
  for (const [field, name] of Object.entries(EXPECT_FIELDS)) {
    if (field in expect && result[name] !== expect[field]) {
      wrong.push(`${name}: got ${JSON.stringify(result[name])}, want ${JSON.stringify(expect[field])}`)
    }
  }
  // A repeated denial may come from the shared store's deny cache.
  const cachedDenial = store === 'redis' && result.store === 'deny_cache' && !result.allowed
  if (result.store !== store && !cachedDenial) wrong.push(`decided by the ${result.store} store, not ${store}`)
  const headers = {}
  for (const [name, value] of Object.entries(result.headers)) headers[name.toLowerCase()] = value
  for (const [name, want] of Object.entries(expect.headers || {})) {
    const got = Object.prototype.hasOwnProperty.call(headers, name.toLowerCase()) ? headers[name.toLowerCase()] : null
    if (got !== want) wrong.push(`header ${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
  }
  // toJSON says the same as the getters.
  const json = result.toJSON()
  for (const name of Object.values(EXPECT_FIELDS)) {
    if (json[name] !== result[name]) wrong.push(`toJSON().${name} is ${json[name]}, the getter ${result[name]}`)
  }
  return wrong
}

/** The vectors' `inspect` fields, each as `KeyStatus` names it. */
const STATUS_FIELDS = {
  limit: 'limit',
  remaining: 'remaining',
  reset_after_ms: 'resetAfterMs',
  blocked_for_ms: 'blockedForMs',
  key_limit_for_ms: 'keyLimitForMs'
}

/** Runs the `admin` step `step` on `engine`; every mismatch. */
async function runAdmin (engine, step, store) {
  const { op, rule, role, points } = step.admin
  const key = step.admin.key ?? null
  const options = { role, nowMs: step.now_ms }
  const expect = step.expect
  let status
  try {
    switch (op) {
      case 'inspect': status = await engine.inspect(rule, key, options); break
      case 'reset': await engine.resetKey(rule, key, options); break
      case 'block': await engine.blockKey(rule, key, step.admin.duration_ms, options); break
      case 'penalize': await engine.penalize(rule, key, points, options); break
      case 'reward': await engine.reward(rule, key, points, options); break
      case 'set_limit': await engine.setKeyLimit(rule, key, step.admin.limit, step.admin.lifetime_ms, options); break
      case 'clear_limit': await engine.clearKeyLimit(rule, key, options); break
      default: throw new Error(`no admin op ${op}`)
    }
  } catch (error) {
    if (!(error instanceof FloodwallError)) return [`threw ${error.name} (not a FloodwallError): ${error.message}`]
    return error.code === expect.error ? [] : [`error ${error.code} (${error.message})`]
  }
  if ('error' in expect) return [`done instead of error ${expect.error}`]
  if (status === undefined) return []
  const wrong = []
  for (const [field, name] of Object.entries(STATUS_FIELDS)) {
    if (field in expect && status[name] !== expect[field]) {
      wrong.push(`${name}: got ${JSON.stringify(status[name])}, want ${JSON.stringify(expect[field])}`)
    }
  }
  if (status.store !== store) wrong.push(`answered by the ${status.store} store, not ${store}`)
  return wrong
}

/**
 * Runs every step of `c` on `engine`, its requests with `decide(request)` (sync or async);
 * every mismatch, a line each.
 */
async function runCase (c, engine, decide, store) {
  const failures = []
  const held = new Map()
  for (const [i, step] of c.steps.entries()) {
    const label = `${c.name} step ${i} (now_ms ${step.now_ms})`
    if (step.admin) {
      const wrong = await runAdmin(engine, step, store)
      if (wrong.length > 0) failures.push(`${label}, ${step.admin.op}: ${wrong.join('; ')}`)
      continue
    }
    for (const name of step.release || []) {
      if (held.has(name)) {
        await held.get(name).release()
        held.delete(name)
      } else {
        failures.push(`${label}: releases ${name}, held by no step`)
      }
    }
    const request = toRequest(step, label)
    let result
    try {
      result = await decide(request)
    } catch (error) {
      result = error
    }
    const wrong = mismatches(result, step.expect, store)
    if (result instanceof Error) {
      // Nothing to hold.
    } else if ('hold' in step) {
      if (result.holds) held.set(step.hold, result)
      else wrong.push(`holds nothing to keep as ${step.hold}`)
    } else {
      await result.release()
      if (result.holds) wrong.push('still holds after release()')
    }
    if (wrong.length > 0) failures.push(`${label}: ${wrong.join('; ')}`)
  }
  return failures
}

/**
 * The cases a batch can run: a case with `concurrency` rules releases between its steps, and
 * one with `admin` steps administers keys between them, which the requests of one batch
 * cannot; those run step by step in the other suites.
 */
const BATCHABLE = CASES.filter((c) =>
  !(c.config.rules || []).some((r) => r.algorithm === 'concurrency') && !c.steps.some((s) => s.admin))

test('the vectors are all there, with unique names and error steps', () => {
  const names = CASES.map((c) => c.name)
  assert.equal(new Set(names).size, names.length, 'duplicate case names')
  assert.ok(names.length >= 40, `${names.length} cases`)
  const errorSteps = CASES.flatMap((c) => c.steps.filter((s) => 'error' in s.expect))
  assert.ok(errorSteps.length > 0, 'no step expects an error')
  for (const c of CASES) {
    for (const step of c.steps) {
      assert.ok(step.admin || 'error' in step.expect || 'allowed' in step.expect, `${c.name}: a step expects nothing`)
    }
  }
})

describe('memory store, checkSync', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const engine = Engine.fromObject(c.config)
      assert.equal(engine.storeKind, 'memory')
      assert.equal(engine.mayWait, false)
      const failures = await runCase(c, engine, (r) => engine.checkSync(r), 'memory')
      assert.deepEqual(failures, [])
    })
  }
})

describe('memory store, check (Promise)', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const engine = Engine.fromObject(c.config)
      const failures = await runCase(c, engine, (r) => {
        const pending = engine.check(r)
        assert.ok(pending instanceof Promise, 'check answers a Promise')
        return pending
      }, 'memory')
      assert.deepEqual(failures, [])
    })
  }
})

test('only the cases with concurrency rules or admin steps run step by step alone', () => {
  const alone = CASES.filter((c) => !BATCHABLE.includes(c)).map((c) => c.name)
  assert.ok(alone.length > 0 && alone.every((name) => /^(concurrency|keys)\//.test(name)), alone.join(', '))
})

describe('memory store, one checkManySync batch per case', () => {
  for (const c of BATCHABLE) {
    test(c.name, () => {
      const engine = Engine.fromObject(c.config)
      const requests = c.steps.map((step, i) => toRequest(step, `${c.name} step ${i}`))
      const results = engine.checkManySync(requests)
      assert.equal(results.length, c.steps.length)
      const failures = []
      for (const [i, step] of c.steps.entries()) {
        const wrong = mismatches(results[i], step.expect, 'memory')
        if (wrong.length > 0) failures.push(`${c.name} step ${i}: ${wrong.join('; ')}`)
      }
      assert.deepEqual(failures, [])
    })
  }
})

for (const denyCache of [false, true]) {
  describe(`redis store, await check (deny_cache ${denyCache ? 'on' : 'off'})`, () => {
    let server
    before(async () => { server = await RedisServer.start() })
    after(async () => { if (server) await server.stop() })

    for (const c of CASES) {
      test(c.name, async () => {
        assert.ok(server, 'redis-server did not start')
        const config = structuredClone(c.config)
        config.store = redisStore(server, { clock: 'local', on_error: 'deny', deny_cache: denyCache })
        const engine = Engine.fromObject(config)
        assert.equal(engine.storeKind, 'redis')
        assert.equal(engine.mayWait, true)
        const failures = await runCase(c, engine, (r) => engine.check(r), 'redis')
        assert.deepEqual(failures, [], `store failure: ${engine.storeFailure}`)
        assert.equal(engine.storeFailure, null)
      })
    }
  })
}

describe('redis store, one checkMany batch per case', () => {
  let server
  before(async () => { server = await RedisServer.start() })
  after(async () => { if (server) await server.stop() })

  for (const c of BATCHABLE) {
    test(c.name, async () => {
      assert.ok(server, 'redis-server did not start')
      const config = structuredClone(c.config)
      config.store = redisStore(server, { clock: 'local', on_error: 'deny' })
      const engine = Engine.fromObject(config)
      const requests = c.steps.map((step, i) => toRequest(step, `${c.name} step ${i}`))
      const results = await engine.checkMany(requests)
      assert.equal(results.length, c.steps.length)
      const failures = []
      for (const [i, step] of c.steps.entries()) {
        const wrong = mismatches(results[i], step.expect, 'redis')
        if (wrong.length > 0) failures.push(`${c.name} step ${i}: ${wrong.join('; ')}`)
      }
      assert.deepEqual(failures, [], `store failure: ${engine.storeFailure}`)
    })
  }
})
