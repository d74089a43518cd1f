'use strict'
/**
 * The engine on the memory store: its construction routes, the `Decision` it answers (fields,
 * headers, layers, toJSON), multi-layer decisions, `checkMany`, its getters; JWT
 * authentication (`authenticate`, `authorize` keyed on the token's subject and role, the 129
 * fixture tokens of `tests/fixtures/jwt`) and key rotation with `reloadAuth`.
 */

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const util = require('node:util')
const jwt = require('jsonwebtoken')

const {
  floodwall, JWT_FIXTURES, CHALLENGES, HMAC_SECRET_ENV, TEST_SECRET, NEW_SECRET,
  loadJwtCases, fixtureEngine, mint, hs256Auth
} = require('./helpers.js')

const { Engine, Decision, Identity, FloodwallError } = floodwall

const TOML = `
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"

[[rules]]
name = "global"
key = "global"
algorithm = "token_bucket"
capacity = 3
refill_rate = 1
`

const CONFIG = {
  rules: [
    { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 2, window: '1m' },
    { name: 'global', key: 'global', algorithm: 'token_bucket', capacity: 3, refill_rate: 1 }
  ]
}

const ROLE_LIMITS = {
  rules: [{
    name: 'per-user',
    key: 'subject',
    algorithm: 'fixed_window',
    limit: 2,
    window: '1m',
    roles: { premium: { limit: 5 } }
  }]
}

/** Everything a caller can read of a decision. */
function described (d) {
  if (d instanceof Error) return { error: d.code, message: d.message }
  return { ...d.toJSON(), layers: d.layers }
}

/** The decisions of a fixed request sequence. */
function history (engine) {
  return ['alice', 'alice', 'alice', 'bob', 'carol'].map((subject) => described(engine.checkSync({ subject, nowMs: 1_000 })))
}

function tmpDir () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-node-test-'))
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

// --- construction ----------------------------------------------------------------------------

test('every construction route gives the same engine', () => {
  const dir = tmpDir()
  try {
    fs.writeFileSync(path.join(dir, 'floodwall.toml'), TOML)
    fs.writeFileSync(path.join(dir, 'floodwall.json'), JSON.stringify(CONFIG))
    fs.writeFileSync(path.join(dir, 'gateway.conf'), TOML)
    const expected = history(Engine.fromObject(CONFIG))
    assert.equal(expected[2].allowed, false)
    assert.equal(expected[2].rule, 'per-user')
    assert.equal(expected[4].allowed, false)
    assert.equal(expected[4].rule, 'global')
    const engines = {
      fromObject: Engine.fromObject(CONFIG),
      fromToml: Engine.fromToml(TOML),
      fromJson: Engine.fromJson(JSON.stringify(CONFIG)),
      'fromFile toml': Engine.fromFile(path.join(dir, 'floodwall.toml')),
      'fromFile json': Engine.fromFile(path.join(dir, 'floodwall.json')),
      'fromFile .conf (TOML)': Engine.fromFile(path.join(dir, 'gateway.conf'))
    }
    for (const [route, engine] of Object.entries(engines)) {
      assert.ok(engine instanceof Engine, route)
      assert.deepEqual(engine.rules, ['per-user', 'global'], route)
      assert.deepEqual(history(engine), expected, route)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a file not ending in .json is read as TOML', () => {
  const dir = tmpDir()
  try {
    fs.writeFileSync(path.join(dir, 'gateway2.conf'), JSON.stringify(CONFIG))
    const error = thrown(() => Engine.fromFile(path.join(dir, 'gateway2.conf')))
    assert.ok(error instanceof FloodwallError)
    assert.equal(error.code, 'invalid_config')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a configuration must be an object', () => {
  for (const build of [
    () => Engine.fromJson('[]'),
    () => Engine.fromJson('null'),
    () => Engine.fromJson('"rules"'),
    () => Engine.fromObject([]),
    () => Engine.fromObject('rules')
  ]) {
    const error = thrown(build)
    assert.ok(error instanceof TypeError || (error instanceof FloodwallError && error.code === 'invalid_config'), error.message)
  }
})

test('an empty engine admits everything, with no headers and no layers', () => {
  for (const engine of [Engine.fromObject({}), Engine.fromToml(''), Engine.fromJson('{}')]) {
    for (const request of [{ subject: 'alice', path: '/anything' }, {}, undefined]) {
      const d = engine.checkSync(request)
      assert.ok(d instanceof Decision)
      assert.equal(d.allowed, true)
      assert.equal(d.rule, null)
      assert.equal(d.limit, null)
      assert.equal(d.remaining, null)
      assert.equal(d.resetAfterMs, 0)
      assert.equal(d.retryAfterMs, 0)
      assert.equal(d.store, 'memory')
      assert.deepEqual(d.headers, {})
      assert.deepEqual(d.layers, [])
    }
    assert.deepEqual(engine.rules, [])
    assert.equal(engine.keyCount, 0)
  }
})

test('fromFile resolves key files against the configuration file\'s directory', () => {
  const dir = tmpDir()
  const cwd = process.cwd()
  try {
    const conf = path.join(dir, 'conf')
    fs.mkdirSync(path.join(conf, 'keys'), { recursive: true })
    fs.copyFileSync(path.join(JWT_FIXTURES, 'keys', 'rsa-1.pub.pem'), path.join(conf, 'keys', 'rsa-1.pub.pem'))
    const toml = '[auth]\nalgorithms = ["RS256"]\n\n[[auth.keys]]\nkid = "rsa-1"\npem_file = "keys/rsa-1.pub.pem"\n'
    fs.writeFileSync(path.join(conf, 'floodwall.toml'), toml)
    fs.writeFileSync(path.join(conf, 'floodwall.json'), JSON.stringify({
      auth: { algorithms: ['RS256'], keys: [{ kid: 'rsa-1', pem_file: 'keys/rsa-1.pub.pem' }] }
    }))
    const elsewhere = path.join(dir, 'elsewhere')
    fs.mkdirSync(elsewhere)
    process.chdir(elsewhere)
    const key = fs.readFileSync(path.join(JWT_FIXTURES, 'keys', 'rsa-1.key.pem'), 'utf8')
    const token = jwt.sign({ sub: 'heidi', exp: Math.floor(Date.now() / 1000) + 3600 }, key, { algorithm: 'RS256', keyid: 'rsa-1', noTimestamp: true })
    for (const file of [path.join(conf, 'floodwall.toml'), '../conf/floodwall.toml', path.join(conf, 'floodwall.json'), '../conf/floodwall.json']) {
      const engine = Engine.fromFile(file)
      assert.equal(engine.hasAuth, true)
      const identity = engine.authenticate('Bearer ' + token)
      assert.deepEqual([identity.subject, identity.keyId, identity.algorithm], ['heidi', 'rsa-1', 'RS256'], file)
    }
    // The same section as text has no file to resolve against: the working directory.
    const error = thrown(() => Engine.fromToml(toml))
    assert.ok(error instanceof FloodwallError)
    assert.equal(error.code, 'invalid_config')
    assert.ok(error.field && error.field.includes('pem_file'), error.field)
  } finally {
    process.chdir(cwd)
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the constructor is not public; the exports are there', () => {
  assert.throws(() => new Engine({}), TypeError)
  assert.equal(typeof floodwall.version, 'string')
  assert.match(floodwall.version, /^\d+\.\d+\.\d+/)
  for (const name of ['Engine', 'Decision', 'Identity', 'Lease', 'FloodwallError', 'ERROR_CODES']) {
    assert.ok(name in floodwall, name)
  }
})

// --- getters ---------------------------------------------------------------------------------

test('engine getters on the memory store', () => {
  const engine = Engine.fromObject(CONFIG)
  assert.equal(engine.storeKind, 'memory')
  assert.equal(engine.mayWait, false)
  assert.equal(engine.hasAuth, false)
  assert.equal(engine.storeFailure, null)
  assert.deepEqual(engine.rules, ['per-user', 'global'])
  assert.ok(Object.isFrozen(engine.rules))
  assert.equal(engine.keyCount, 0)
  const withAuth = Engine.fromObject({ auth: hs256Auth(), ...CONFIG })
  assert.equal(withAuth.hasAuth, true)
})

test('keyHeaders: the headers some rule is keyed on, lower-cased, once each', () => {
  const rule = (name, key) => ({ name, key, algorithm: 'fixed_window', limit: 1, window: '1s' })
  const engine = Engine.fromObject({
    rules: [rule('a', 'header:X-Api-Key'), rule('b', 'subject'), rule('c', 'header:x-api-key'), rule('d', 'header:X-Tenant')]
  })
  assert.deepEqual([...engine.keyHeaders].sort(), ['x-api-key', 'x-tenant'])
  assert.deepEqual(Engine.fromObject(CONFIG).keyHeaders, [])
  assert.deepEqual(Engine.fromObject({}).keyHeaders, [])
})

test('a duplicate rule name is invalid_config on the second rule', () => {
  const rule = (key) => ({ name: 'same', key, algorithm: 'fixed_window', limit: 1, window: '1s' })
  const error = thrown(() => Engine.fromObject({ rules: [rule('subject'), rule('ip')] }))
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'invalid_config')
  assert.equal(error.field, 'rules[1].name')
})

test('keyCount and purgeExpired', () => {
  const engine = Engine.fromObject(CONFIG)
  assert.equal(engine.keyCount, 0)
  for (const subject of ['alice', 'bob', 'carol']) engine.checkSync({ subject, nowMs: 1_000 })
  assert.equal(engine.keyCount, 4, 'three subjects and the global bucket')
  // Their windows ended in 1970: the engine's clock finds them all expired.
  assert.equal(engine.purgeExpired(), 4)
  assert.equal(engine.keyCount, 0)
  assert.equal(engine.purgeExpired(), 0)

  engine.checkSync({ subject: 'dave' })
  engine.checkSync({ subject: 'erin' })
  assert.equal(engine.keyCount, 3)
  assert.equal(engine.purgeExpired(), 0, 'keys written now are alive')
  assert.equal(engine.keyCount, 3)
})

test('max_keys caps the memory store', () => {
  const engine = Engine.fromObject({ ...CONFIG, store: { kind: 'memory', max_keys: 10 } })
  for (let i = 0; i < 50; i++) engine.checkSync({ subject: `user-${i}` })
  assert.ok(engine.keyCount <= 10, `${engine.keyCount} keys`)
})

// --- Decision --------------------------------------------------------------------------------

test('decision fields, toJSON and inspect', () => {
  const engine = Engine.fromObject(CONFIG)
  const first = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.ok(first instanceof Decision)
  assert.deepEqual(
    [first.allowed, first.rule, first.limit, first.remaining, first.resetAfterMs, first.retryAfterMs, first.store],
    [true, 'per-user', 2, 1, 59_000, 0, 'memory']
  )
  engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  const denied = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.deepEqual(denied.toJSON(), {
    allowed: false,
    rule: 'per-user',
    limit: 2,
    remaining: 0,
    resetAfterMs: 59_000,
    retryAfterMs: 59_000,
    blocked: false,
    store: 'memory',
    headers: {
      'RateLimit-Policy': '"per-user";q=2;w=60, "global";q=3;w=3',
      RateLimit: '"per-user";r=0;t=59, "global";r=1;t=2',
      'RateLimit-Limit': '2',
      'RateLimit-Remaining': '0',
      'RateLimit-Reset': '59',
      'Retry-After': '59'
    }
  })
  assert.deepEqual(JSON.parse(JSON.stringify(denied)), denied.toJSON())
  assert.equal(
    util.inspect(first),
    'Decision {"allowed":true,"rule":"per-user","limit":2,"remaining":1,"resetAfterMs":59000,"retryAfterMs":0,"blocked":false,"store":"memory"}'
  )
})

test('a decision is read-only', () => {
  const d = Engine.fromObject(CONFIG).checkSync({ subject: 'alice', nowMs: 1_000 })
  for (const [name, value] of [['allowed', false], ['remaining', 0], ['store', 'redis'], ['rule', 'x'], ['headers', {}], ['layers', []]]) {
    assert.throws(() => { d[name] = value }, TypeError, name)
  }
  assert.equal(d.allowed, true)
  assert.equal(d.remaining, 1)
  const layer = d.layers[0]
  assert.ok(Object.isFrozen(layer))
  assert.throws(() => { layer.remaining = 0 }, TypeError)
  assert.equal(d.layers[0].remaining, 1)
})

test('a decision keeps its values after later checks reuse the output buffer', () => {
  const engine = Engine.fromObject(CONFIG)
  const first = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  const before = described(first)
  const beforeHeaders = first.headers
  // Later decisions of other shapes: no rule, a denial, another subject.
  Engine.fromObject({}).checkSync({ subject: 'x' })
  engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  engine.checkSync({ subject: 'bob', nowMs: 1_000 })
  assert.deepEqual(described(first), before)
  assert.deepEqual(first.headers, beforeHeaders)
})

test('headers: a new object on every read', () => {
  const engine = Engine.fromObject(CONFIG)
  engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  const admitted = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.deepEqual(admitted.headers, {
    'RateLimit-Policy': '"per-user";q=2;w=60, "global";q=3;w=3',
    RateLimit: '"per-user";r=0;t=59, "global";r=1;t=2',
    'RateLimit-Limit': '2',
    'RateLimit-Remaining': '0',
    'RateLimit-Reset': '59'
  })
  const denied = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.equal(denied.headers['Retry-After'], '59')
  const copy = denied.headers
  for (const key of Object.keys(copy)) delete copy[key]
  assert.equal(denied.headers['Retry-After'], '59', 'headers is a new object on every read')
})

test('header sets can be turned off', () => {
  const engine = Engine.fromObject({ ...CONFIG, headers: { ietf: false, retry_after: false } })
  let d
  for (let i = 0; i < 3; i++) d = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.equal(d.allowed, false)
  assert.deepEqual(d.headers, { 'RateLimit-Limit': '2', 'RateLimit-Remaining': '0', 'RateLimit-Reset': '59' })
  const none = Engine.fromObject({ ...CONFIG, headers: { ietf: false, legacy: false, retry_after: false } })
  for (let i = 0; i < 3; i++) d = none.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.deepEqual(d.headers, {})
  assert.equal(d.allowed, false)
})

test('layers: every matched rule in configuration order; a denial consumes nothing', () => {
  const engine = Engine.fromObject(CONFIG)
  const d = engine.checkSync({ subject: 'alice', nowMs: 1_000 })
  assert.ok(Array.isArray(d.layers))
  assert.deepEqual(d.layers, [
    { rule: 'per-user', allowed: true, limit: 2, remaining: 1, resetAfterMs: 59_000, retryAfterMs: 0 },
    { rule: 'global', allowed: true, limit: 3, remaining: 2, resetAfterMs: 1_000, retryAfterMs: 0 }
  ])
  // Bob and carol empty the global bucket; dave is denied by it alone, and nothing of his
  // own counter is consumed.
  engine.checkSync({ subject: 'bob', nowMs: 1_000 })
  engine.checkSync({ subject: 'carol', nowMs: 1_000 })
  const denied = engine.checkSync({ subject: 'dave', nowMs: 1_000 })
  assert.deepEqual([denied.allowed, denied.rule, denied.retryAfterMs], [false, 'global', 1_000])
  assert.deepEqual(denied.layers.map((l) => [l.rule, l.allowed, l.remaining]), [['per-user', true, 2], ['global', false, 0]])
  assert.equal(denied.headers['Retry-After'], '1')
  const later = engine.checkSync({ subject: 'dave', nowMs: 2_000 })
  assert.equal(later.allowed, true)
  assert.equal(later.layers[0].remaining, 1, 'the denial consumed nothing')
})

test('a multi-layer decision lists every layer in its headers', () => {
  const rules = []
  const names = []
  for (let i = 0; i < 6; i++) {
    names.push(`layer-${i}`)
    rules.push({ name: `layer-${i}`, key: i % 2 ? 'global' : 'subject', algorithm: 'fixed_window', limit: 10 + i, window: `${i + 1}s` })
  }
  rules.push({ name: 'other-path', match: { paths: ['/other'] }, key: 'global', algorithm: 'fixed_window', limit: 1, window: '1s' })
  const engine = Engine.fromObject({ rules })
  assert.equal(engine.rules.length, 7)
  const d = engine.checkSync({ subject: 'alice', path: '/api', nowMs: 0 })
  assert.deepEqual(d.layers.map((l) => l.rule), names)
  assert.equal(d.rule, 'layer-0', 'the smallest remaining: 9 of layer-0')
  assert.equal(d.remaining, 9)
  assert.equal(d.headers['RateLimit-Policy'], names.map((n, i) => `"${n}";q=${10 + i};w=${i + 1}`).join(', '))
  assert.equal(d.headers.RateLimit, names.map((n, i) => `"${n}";r=${9 + i};t=${i + 1}`).join(', '))
  assert.equal(d.headers['RateLimit-Limit'], '10')
})

test('the most rules a configuration may have (256) all decide together', () => {
  const many = (n) => ({ rules: Array.from({ length: n }, (_, i) => ({ name: `r${i}`, key: 'subject', algorithm: 'fixed_window', limit: 10 + i, window: '1m' })) })
  const engine = Engine.fromObject(many(256))
  const d = engine.checkSync({ subject: 'a', nowMs: 1_000 })
  assert.equal(d.layers.length, 256)
  assert.deepEqual([d.rule, d.limit, d.remaining], ['r0', 10, 9])
  assert.deepEqual(d.layers.map((l) => l.remaining), Array.from({ length: 256 }, (_, i) => 9 + i))
  assert.equal(d.headers.RateLimit.split(', ').length, 256)
  const [batched] = engine.checkManySync([{ subject: 'a', nowMs: 1_000 }])
  assert.equal(batched.layers.length, 256)
  assert.equal(batched.remaining, 8)
  const error = thrown(() => Engine.fromObject(many(257)))
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'invalid_config')
  assert.equal(error.field, 'rules')
})

test('check arguments: methods, paths, header keys, roles, cost, ip', () => {
  const engine = Engine.fromObject({
    rules: [{
      name: 'writes',
      match: { methods: ['POST'], paths: ['/api/**'] },
      key: 'header:X-Api-Key',
      algorithm: 'fixed_window',
      limit: 10,
      window: '1m',
      roles: { premium: { limit: 100 } }
    }]
  })
  assert.equal(engine.checkSync({ method: 'GET', path: '/api/x', nowMs: 1_000 }).rule, null)
  let d = engine.checkSync({ method: 'post', path: '/api//x/?q=1', headers: { 'x-api-key': 'k1' }, cost: 4, nowMs: 1_000 })
  assert.deepEqual([d.rule, d.remaining], ['writes', 6])
  d = engine.checkSync({ method: 'POST', path: '/api/x', headers: { 'X-API-KEY': 'k1' }, nowMs: 1_000 })
  assert.equal(d.remaining, 5, 'the same key whatever the header name\'s case')
  const premium = engine.checkSync({ method: 'POST', path: '/api/x', role: 'premium', headers: { 'X-Api-Key': 'k1' }, nowMs: 1_000 })
  assert.deepEqual([premium.limit, premium.remaining], [100, 99])
  const peek = engine.checkSync({ method: 'POST', path: '/api/x', headers: { 'X-Api-Key': 'k1' }, cost: 0, nowMs: 1_000 })
  assert.deepEqual([peek.allowed, peek.remaining], [true, 5])
  assert.equal(engine.checkSync({ method: 'POST', path: '/api/x', ip: '10.0.0.1', nowMs: 1_000 }).remaining, 9)
  // null and undefined fields are absent fields.
  d = engine.checkSync({ subject: null, role: undefined, method: 'POST', path: '/api/x', ip: null, cost: null, nowMs: 1_000, headers: null })
  assert.equal(d.remaining, 8, 'the keyless counter (the ip request took 1), cost 1 by default')
})

const KEYED = {
  rules: [
    { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 2, window: '1m' },
    { name: 'per-key', match: { paths: ['/keyed/**'] }, key: 'header:X-Api-Key', algorithm: 'fixed_window', limit: 3, window: '1m' }
  ]
}

/** Each subject checked three times: 1, 0 remaining, then denied — if each has its own counter. */
function assertOwnCounters (engine, subjects) {
  for (const subject of subjects) {
    assert.equal(engine.checkSync({ subject, nowMs: 1_000 }).remaining, 1, `first check of a ${Buffer.byteLength(subject)}-byte subject`)
  }
  for (const subject of subjects) {
    assert.equal(engine.checkSync({ subject, nowMs: 1_000 }).remaining, 0)
    assert.equal(engine.checkSync({ subject, nowMs: 1_000 }).allowed, false)
  }
}

test('long ASCII strings are keys of their own, byte for byte', () => {
  const engine = Engine.fromObject(KEYED)
  assertOwnCounters(engine, [
    'x'.repeat(254), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(257),
    'x'.repeat(5000), 'x'.repeat(5000) + 'y', '', 'a'
  ])
  // A long path and header value, and many headers.
  const headers = {}
  for (let i = 0; i < 40; i++) headers[`X-Filler-${i}`] = 'v'.repeat(300)
  const key = 'k'.repeat(1000)
  for (let i = 0; i < 3; i++) {
    const d = engine.checkSync({ subject: `z${i}`, path: '/keyed/' + 'p'.repeat(2000), headers: { ...headers, 'X-Api-Key': key }, nowMs: 1_000 })
    if (i === 0) assert.deepEqual(d.layers.map((l) => l.rule), ['per-user', 'per-key'])
    assert.equal(d.layers[1].remaining, 2 - i)
  }
  const other = engine.checkSync({ subject: 'z-other', path: '/keyed/a', headers: { 'X-Api-Key': key + '2' }, nowMs: 1_000 })
  assert.equal(other.layers[1].remaining, 2, 'a key one byte longer is another key')
})

test('short non-ASCII strings are keys of their own', () => {
  assertOwnCounters(Engine.fromObject(KEYED), ['用户-1', '用户-2', '👩‍💻', 'é'.repeat(100) + 'a', 'é'.repeat(100) + 'b'])
})

test('long non-ASCII subjects (over 256 bytes of UTF-8) are keys of their own', () => {
  // 'é' is 2 bytes of UTF-8: 'é' x 128 is 256 bytes, 'é' x 127 is 254.
  assertOwnCounters(Engine.fromObject(KEYED), ['é'.repeat(127), 'é'.repeat(128), 'é'.repeat(200) + 'a', 'é'.repeat(200) + 'b', '用'.repeat(90) + '1', '用'.repeat(90) + '2', 'é'.repeat(1023), 'é'.repeat(1024), 'é'.repeat(1023) + 'a', 'é'.repeat(1200) + 'a', 'é'.repeat(1200) + 'b', '用'.repeat(682) + 'x', '用'.repeat(682) + 'y'])
})

test('long non-ASCII header values are read whole', () => {
  const engine = Engine.fromObject(KEYED)
  const key = 'ключ-'.repeat(60) // 540 bytes
  for (let i = 0; i < 3; i++) {
    const d = engine.checkSync({ subject: `h${i}`, path: '/keyed/x', headers: { 'X-Api-Key': key + 'A' }, nowMs: 1_000 })
    assert.equal(d.layers[1].remaining, 2 - i)
  }
  const other = engine.checkSync({ subject: 'hB', path: '/keyed/x', headers: { 'X-Api-Key': key + 'B' }, nowMs: 1_000 })
  assert.equal(other.layers[1].remaining, 2, 'another key value is another counter')
})

test('long non-ASCII paths are read whole', () => {
  // A path whose literal segment lies beyond the first 256 bytes must still match.
  const exact = Engine.fromObject({
    rules: [{ name: 'deep', match: { paths: ['/' + 'é'.repeat(130) + '/tail'] }, key: 'global', algorithm: 'fixed_window', limit: 1, window: '1m' }]
  })
  assert.equal(exact.checkSync({ path: '/' + 'é'.repeat(130) + '/tail', nowMs: 1_000 }).rule, 'deep')
  assert.equal(exact.checkSync({ path: '/' + 'é'.repeat(130) + '/other', nowMs: 1_000 }).rule, null)
})

// --- checkMany -------------------------------------------------------------------------------

test('checkManySync answers in order, errors in their slots', () => {
  const engine = Engine.fromObject(CONFIG)
  const results = engine.checkManySync([
    { subject: 'alice', nowMs: 1_000 },
    { subject: 'alice', cost: 5, nowMs: 1_000 },
    { subject: 'alice', nowMs: 1_000 },
    { subject: 'alice', nowMs: 1_000 },
    { subject: 'bob', nowMs: 61_000, headers: { 'X-Any': '1' }, method: 'POST', path: '/', ip: '10.0.0.1', role: 'free' }
  ])
  assert.ok(Array.isArray(results))
  assert.equal(results.length, 5)
  const [first, error, second, third, later] = results
  assert.ok(first instanceof Decision)
  assert.deepEqual([first.allowed, first.remaining], [true, 1])
  assert.ok(error instanceof FloodwallError)
  assert.deepEqual([error.code, error.status], ['cost_exceeds_limit', 429])
  assert.deepEqual([second.allowed, second.remaining], [true, 0])
  assert.equal(third.allowed, false)
  assert.equal(third.headers['Retry-After'], '59')
  assert.deepEqual([later.allowed, later.rule], [true, 'per-user'])
})

test('checkMany (Promise) answers what checkManySync answers', async () => {
  const requests = [
    { subject: 'alice', nowMs: 1_000 },
    { subject: 'alice', cost: 5, nowMs: 1_000 },
    { subject: 'alice', nowMs: 1_000 },
    { subject: 'alice', nowMs: 1_000 }
  ]
  const pending = Engine.fromObject(CONFIG).checkMany(requests)
  assert.ok(pending instanceof Promise)
  const got = await pending
  const want = Engine.fromObject(CONFIG).checkManySync(requests)
  assert.deepEqual(got.map(described), want.map(described))
  assert.ok(got[1] instanceof FloodwallError)
})

test('a batch decides like checks one by one', () => {
  const requests = [...'aabacbadcb'].map((s, i) => ({ subject: s, nowMs: 1_000 + i }))
  const batch = Engine.fromObject(CONFIG).checkManySync(requests)
  const oneByOne = Engine.fromObject(CONFIG)
  assert.deepEqual(batch.map(described), requests.map((r) => described(oneByOne.checkSync(r))))
  function * generate () { yield * requests }
  assert.deepEqual(Engine.fromObject(CONFIG).checkManySync(generate()).map(described), batch.map(described), 'any iterable')
})

test('a batch of nothing', async () => {
  assert.deepEqual(Engine.fromObject(CONFIG).checkManySync([]), [])
  assert.deepEqual(await Engine.fromObject(CONFIG).checkMany([]), [])
})

test('check (Promise) on memory answers what checkSync answers', async () => {
  const a = Engine.fromObject(CONFIG)
  const b = Engine.fromObject(CONFIG)
  for (const subject of ['alice', 'alice', 'alice', 'bob', 'carol', 'dave']) {
    const pending = a.check({ subject, nowMs: 1_000 })
    assert.ok(pending instanceof Promise)
    assert.deepEqual(described(await pending), described(b.checkSync({ subject, nowMs: 1_000 })))
  }
})

// --- authentication --------------------------------------------------------------------------

test('authenticate: the identity a token gives', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  const exp = Math.floor(Date.now() / 1000) + 3600
  const identity = engine.authenticate(mint('alice', { role: 'premium', claims: { tenant: 'acme', nested: { a: [1, 'two'] }, 'a.b': 'dotted' }, now: exp - 3600 }))
  assert.ok(identity instanceof Identity)
  assert.equal(identity.subject, 'alice')
  assert.equal(identity.role, 'premium')
  assert.equal(identity.algorithm, 'HS256')
  assert.equal(identity.keyId, null)
  assert.equal(identity.expiresAtMs, exp * 1000)
  assert.deepEqual(identity.claims, { sub: 'alice', role: 'premium', exp, tenant: 'acme', nested: { a: [1, 'two'] }, 'a.b': 'dotted' })
  assert.equal(identity.claim('tenant'), 'acme')
  assert.deepEqual(identity.claim('nested.a'), [1, 'two'])
  assert.equal(identity.claim('a.b'), 'dotted')
  assert.equal(identity.claim('no-such-claim'), undefined)
  assert.equal(identity.claim('nested.nothing'), undefined)
  const claims = identity.claims
  claims.tenant = 'other'
  assert.equal(identity.claims.tenant, 'acme', 'claims is a new object on every read')
  for (const name of ['subject', 'role', 'keyId', 'algorithm', 'expiresAtMs', 'claims']) {
    assert.throws(() => { identity[name] = 'eve' }, TypeError, `${name} is read-only`)
  }
  assert.equal(identity.subject, 'alice')
})

test('identity: toJSON, inspect; claims from authorize too', () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  const exp = Math.floor(Date.now() / 1000) + 3600
  const token = mint('alice', { role: 'premium', claims: { tenant: 'acme' }, now: exp - 3600 })
  const identity = engine.authenticate(token)
  const json = { subject: 'alice', role: 'premium', keyId: null, algorithm: 'HS256', expiresAtMs: exp * 1000 }
  assert.deepEqual(identity.toJSON(), json)
  assert.deepEqual(JSON.parse(JSON.stringify(identity)), json)
  assert.equal(util.inspect(identity), `Identity ${JSON.stringify(json)}`)
  const { identity: authorized } = engine.authorizeSync(token, { nowMs: 60_000 })
  assert.deepEqual(authorized.toJSON(), json)
  assert.deepEqual(authorized.claims, { sub: 'alice', role: 'premium', exp, tenant: 'acme' })
})

test('identity.claims verifies the token again: after a rotation it throws', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  const identity = engine.authenticate(mint('alice', { claims: { tenant: 'acme' } }))
  assert.equal(identity.claim('tenant'), 'acme')
  engine.reloadAuth(hs256Auth(NEW_SECRET))
  assert.equal(identity.subject, 'alice', 'the fields stay')
  const error = thrown(() => identity.claims)
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'bad_signature')
})

test('a token without a role claim has no role; kid is reported', () => {
  const engine = Engine.fromObject({ auth: { algorithms: ['HS256'], keys: [{ kid: 'k1', secret: TEST_SECRET }], require_exp: false } })
  const identity = engine.authenticate(mint('bob', { kid: 'k1', expiresIn: null }))
  assert.equal(identity.role, null)
  assert.equal(identity.keyId, 'k1')
  assert.equal(identity.expiresAtMs, null)
})

test('authorize decides under the token\'s subject and role', async () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  const premium = mint('alice', { role: 'premium' })
  const free = mint('bob', { role: 'free' })
  const at = 60_000
  const admitted = []
  for (let i = 0; i < 7; i++) {
    const result = engine.authorizeSync(premium, { path: '/api', nowMs: at })
    assert.ok(result.identity instanceof Identity)
    assert.ok(result.decision instanceof Decision)
    assert.equal(result.identity.subject, 'alice')
    assert.equal(result.identity.role, 'premium')
    assert.equal(result.decision.limit, 5)
    assert.equal(result.decision.store, 'memory')
    admitted.push(result.decision.allowed)
  }
  assert.deepEqual(admitted, [true, true, true, true, true, false, false])

  const bob = []
  for (let i = 0; i < 3; i++) {
    const pending = engine.authorize(free, { nowMs: at })
    assert.ok(pending instanceof Promise)
    bob.push((await pending).decision.allowed)
  }
  assert.deepEqual(bob, [true, true, false], 'bob draws from his own counter, limit 2')

  // The counter is the subject's: a check naming alice and premium finds it spent.
  const denied = engine.checkSync({ subject: 'alice', role: 'premium', nowMs: at })
  assert.equal(denied.allowed, false)
  assert.equal(denied.headers['Retry-After'], '60')
  // A subject or role in the request does not replace the token's.
  const carol = mint('carol')
  const result = engine.authorizeSync(carol, { subject: 'alice', role: 'premium', nowMs: at })
  assert.equal(result.identity.subject, 'carol')
  assert.deepEqual([result.decision.allowed, result.decision.limit, result.decision.remaining], [true, 2, 1])
})

test('a refused token consumes nothing', async () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  for (let i = 0; i < 5; i++) {
    const error = thrown(() => engine.authorizeSync(mint('alice', { expiresIn: -3600 }), { nowMs: 60_000 }))
    assert.ok(error instanceof FloodwallError)
    assert.equal(error.code, 'expired')
    assert.equal(error.status, 401)
    assert.equal(error.wwwAuthenticate, CHALLENGES.expired)
    await assert.rejects(engine.authorize(mint('alice', { expiresIn: -3600 })), (e) => e instanceof FloodwallError && e.code === 'expired')
  }
  assert.equal(engine.keyCount, 0)
})

test('authorize judges the token at the engine\'s clock: nowMs cannot revive it', () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  const issued = Date.now() / 1000 - 7200
  const expired = mint('alice', { now: issued, expiresIn: 3600 })
  const error = thrown(() => engine.authorizeSync(expired, { nowMs: Math.floor(issued * 1000) }))
  assert.equal(error.code, 'expired')
})

test('authorize: a cost over the limit', () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  const error = thrown(() => engine.authorizeSync(mint('bob'), { cost: 3, nowMs: 60_000 }))
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'cost_exceeds_limit')
  assert.equal(engine.authorizeSync(mint('alice', { role: 'premium' }), { cost: 3, nowMs: 60_000 }).decision.allowed, true)
})

test('authorize: layers and headers like check', () => {
  const engine = Engine.fromObject({ auth: hs256Auth(), ...ROLE_LIMITS })
  const { decision } = engine.authorizeSync(mint('alice', { role: 'premium' }), { nowMs: 60_000 })
  assert.deepEqual(decision.layers.map((l) => l.limit), [5])
  assert.equal(decision.headers['RateLimit-Limit'], '5')
  assert.equal(decision.headers['RateLimit-Remaining'], '4')
})

// --- the JWT fixtures ------------------------------------------------------------------------

describe('the JWT fixtures', () => {
  const fixtures = loadJwtCases()
  const nowMs = fixtures.now * 1000
  const engine = fixtureEngine(fixtures)

  test('129 cases covering every auth kind', () => {
    assert.equal(fixtures.cases.length, 129)
    const kinds = new Set(fixtures.cases.filter((c) => 'error' in c.expect).map((c) => c.expect.error))
    assert.deepEqual([...kinds].sort(), Object.keys(CHALLENGES).sort())
    assert.ok(fixtures.cases.some((c) => 'ok' in c.expect))
    assert.equal(engine.hasAuth, true)
  })

  for (const c of fixtures.cases) {
    test(c.name, () => {
      const label = `${c.name} (${c.minted_by}; ${c.why})`
      const authorization = 'Bearer ' + c.token
      if ('ok' in c.expect) {
        const identity = engine.authenticate(authorization, { nowMs })
        assert.deepEqual([identity.subject, identity.role], [c.expect.ok.subject, c.expect.ok.role], label)
      } else {
        const error = thrown(() => engine.authenticate(authorization, { nowMs }))
        assert.ok(error instanceof FloodwallError, `${label}: ${error}`)
        assert.equal(error.code, c.expect.error, `${label}: ${error.message}`)
        assert.equal(error.status, 401)
        assert.equal(error.wwwAuthenticate, CHALLENGES[c.expect.error], label)
      }
    })
  }

  test('a token is judged at the time given, with 30 s of leeway', () => {
    const c = fixtures.cases.find((x) => x.name === 'pyjwt_hs256_hmac_1')
    const expMs = jwt.decode(c.token).exp * 1000
    assert.equal(engine.authenticate('Bearer ' + c.token, { nowMs: expMs + 29_000 }).subject, 'user-1')
    const error = thrown(() => engine.authenticate('Bearer ' + c.token, { nowMs: expMs + 31_000 }))
    assert.equal(error.code, 'expired')
  })

  test('identity fields of a fixture token', () => {
    const c = fixtures.cases.find((x) => x.name === 'pyjwt_hs256_hmac_1')
    const payload = jwt.decode(c.token)
    const identity = engine.authenticate('Bearer ' + c.token, { nowMs })
    assert.equal(identity.subject, 'user-1')
    assert.equal(identity.role, 'free', 'the default role: the token carries none')
    assert.equal(identity.keyId, 'hmac-1')
    assert.equal(identity.algorithm, 'HS256')
    assert.equal(identity.expiresAtMs, payload.exp * 1000)
    assert.deepEqual(identity.claims, payload)
    assert.equal(identity.claim('tenant'), 'acme')
  })

  test('a role from a list claim, mapped', () => {
    const c = fixtures.cases.find((x) => x.name === 'role_list_gold_maps_to_premium')
    const identity = engine.authenticate('Bearer ' + c.token, { nowMs })
    assert.equal(identity.role, 'premium')
    assert.deepEqual(identity.claim('realm_access.roles'), ['gold'])
    assert.deepEqual(identity.claim('realm_access'), { roles: ['gold'] })
  })

  test('the hmac-env key needs its variable', () => {
    assert.equal(process.env[HMAC_SECRET_ENV], fixtures.config.env[HMAC_SECRET_ENV])
    const c = fixtures.cases.find((x) => 'ok' in x.expect && jwt.decode(x.token, { complete: true }).header.kid === 'hmac-env')
    assert.ok(c, 'a case signed with hmac-env')
    assert.equal(engine.authenticate('Bearer ' + c.token, { nowMs }).subject, c.expect.ok.subject)
  })
})

// --- reloadAuth ------------------------------------------------------------------------------

describe('reloadAuth rotates the keys', () => {
  for (const [name, fields] of [['no cache', {}], ['cache', { cache: { max_entries: 100 } }]]) {
    test(name, async () => {
      const engine = Engine.fromObject({ auth: hs256Auth(TEST_SECRET, fields), ...ROLE_LIMITS })
      const old = mint('alice', { role: 'premium' })
      const fresh = mint('alice', { role: 'premium', secret: NEW_SECRET })
      assert.equal(engine.authenticate(old).subject, 'alice')
      assert.equal(thrown(() => engine.authenticate(fresh)).code, 'bad_signature')

      engine.reloadAuth(hs256Auth(NEW_SECRET, fields))
      assert.equal(thrown(() => engine.authenticate(old)).code, 'bad_signature')
      assert.equal(thrown(() => engine.authorizeSync(old)).code, 'bad_signature')
      await assert.rejects(engine.authorize(old), (e) => e.code === 'bad_signature')
      assert.equal(engine.authenticate(fresh).role, 'premium')
      assert.equal(engine.authorizeSync(fresh, { nowMs: 60_000 }).decision.limit, 5)
    })
  }
})

test('reloadAuth with kids', () => {
  const engine = Engine.fromObject({ auth: { algorithms: ['HS256'], keys: [{ kid: 'k1', secret: TEST_SECRET }] } })
  const old = mint('alice', { kid: 'k1' })
  assert.equal(engine.authenticate(old).keyId, 'k1')
  engine.reloadAuth({ algorithms: ['HS256'], keys: [{ kid: 'k2', secret: NEW_SECRET }] })
  const error = thrown(() => engine.authenticate(old))
  assert.equal(error.code, 'unknown_key')
  assert.equal(engine.authenticate(mint('alice', { kid: 'k2', secret: NEW_SECRET })).keyId, 'k2')
})

test('a failed reload keeps the running keys', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  const token = mint('alice')
  let error = thrown(() => engine.reloadAuth({ algorithms: ['HS256'], keys: [{ secret: 'too short' }] }))
  assert.ok(error instanceof FloodwallError)
  assert.equal(error.code, 'invalid_config')
  assert.ok(error.field && error.field.startsWith('auth.keys[0]'), error.field)
  error = thrown(() => engine.reloadAuth({ algorithms: ['HS256'], keys: [], bogus: true }))
  assert.equal(error.code, 'invalid_config')
  assert.equal(engine.authenticate(token).subject, 'alice')
  assert.equal(engine.hasAuth, true)
})

test('reloadAuth(null) removes authentication, and an object brings it back', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  engine.reloadAuth(null)
  assert.equal(engine.hasAuth, false)
  const error = thrown(() => engine.authenticate(mint('alice')))
  assert.equal(error.code, 'invalid_config')
  assert.equal(error.field, 'auth')
  engine.reloadAuth(hs256Auth())
  assert.equal(engine.hasAuth, true)
  assert.equal(engine.authenticate(mint('alice')).subject, 'alice')
})

test('a wrong argument to reloadAuth is a TypeError that leaves authentication as it is', () => {
  const engine = Engine.fromObject({ auth: hs256Auth() })
  for (const wrong of [undefined, 'auth', 42, [hs256Auth()], true]) {
    assert.throws(() => engine.reloadAuth(wrong), (error) => error instanceof TypeError && /reloadAuth\(\): auth must be an object/.test(error.message), String(wrong))
    assert.equal(engine.hasAuth, true)
    assert.equal(engine.authenticate(mint('alice')).subject, 'alice')
  }
  assert.throws(() => engine.reloadAuth(), TypeError, 'no argument at all')
  assert.equal(engine.hasAuth, true)
})

test('reloadAuth resolves key files against the configuration file', () => {
  const fixtures = loadJwtCases()
  const engine = fixtureEngine(fixtures)
  const dir = tmpDir()
  const cwd = process.cwd()
  try {
    process.chdir(dir)
    engine.reloadAuth({ algorithms: ['RS256'], keys: [{ kid: 'rsa-2', pem_file: 'keys/rsa-2.pub.pem' }] })
  } finally {
    process.chdir(cwd)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const key = fs.readFileSync(path.join(JWT_FIXTURES, 'keys', 'rsa-2.key.pem'), 'utf8')
  const token = jwt.sign({ sub: 'grace', exp: Math.floor(Date.now() / 1000) + 3600 }, key, { algorithm: 'RS256', keyid: 'rsa-2', noTimestamp: true })
  const identity = engine.authenticate('Bearer ' + token)
  assert.deepEqual([identity.subject, identity.algorithm, identity.keyId], ['grace', 'RS256', 'rsa-2'])
})
