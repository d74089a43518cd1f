#!/usr/bin/env node
'use strict'
/**
 * floodwall's Node package beside the libraries an Express developer would use instead,
 * measured in the same run on the same machine, printed as one table (or, with --json, one
 * JSON document on the last line of stdout, which benches/compare/run.py merges with the
 * other languages' parts).
 *
 * Groups of rows (floodwall vs peer, same keys, same limits, same concurrency):
 * - `memory`: `checkSync` on the memory store vs rate-limiter-flexible's
 *   `RateLimiterMemory.consume` (awaited, as it is used), 1 key and 100,000 keys, in 1 and 2
 *   worker threads (each worker holds its own engine and its own limiter, as each process of a
 *   Node cluster would); both always admit (10⁹ a minute). On one key and one thread, also the
 *   addon function under `checkSync` vs an addon function taking the same arguments and doing
 *   nothing (the crossing into the addon: the floor of any call);
 * - `redis`: `check` vs `RateLimiterRedis` (ioredis) on one key, one layer at 1 and 64 requests
 *   in flight, and three layers (floodwall's atomic, three consumes) at 64: throughput, p50
 *   and p99, and Redis's CPU time per decision (user + sys from `INFO cpu`, read before and
 *   after each run on a connection of its own);
 * - `jwt`: `engine.authenticate` (no token cache) vs jsonwebtoken's `verify` (pre-parsed
 *   KeyObject), HS256 / RS256 (2048-bit) / ES256, both checking signature, alg, iss, aud and
 *   exp on the same token, minted for the run with the keys of tests/fixtures/jwt;
 * - `express`: an Express app under autocannon (127.0.0.1, 50 connections): bare, guarded by
 *   floodwall's `guard()` (memory and Redis store), by jsonwebtoken + express-rate-limit
 *   (memory store, and rate-limit-redis) and by jsonwebtoken + rate-limiter-flexible (memory
 *   and Redis) — `bench/express_app.js`, each variant in its own process;
 * - `race`: correctness beside speed — 4 processes race on one Redis key with limit N, each
 *   trying N times; the number admitted by floodwall, rate-limiter-flexible and
 *   express-rate-limit's rate-limit-redis store (exact is N).
 *
 * Each row alternates the two sides for --rounds rounds (default 5; 3 for `express`) and
 * reports the median round. Every loop is bounded in calls and in time.
 * Usage: node bench/compare.js [--quick] [--rounds N] [--only GROUP[,GROUP]] [--redis URL] [--json]
 * Without --redis, a redis-server of its own is started on a free 127.0.0.1 port and stopped.
 * (`make bench-node` installs the peers pinned in bench/package.json and runs it;
 * `make compare` runs it through benches/compare/run.py.)
 */

const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork, spawn } = require('node:child_process')
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')

const peers = path.join(__dirname, 'node_modules')
const peer = (name) => require(path.join(peers, name))
const peerVersion = (name) => require(path.join(peers, name, 'package.json')).version

const KEYS = 100_000
const SECRET = 'floodwall-bench-secret-0123456789-abcdefghijklmnop'
const RULE = { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1e9, window: '1m' }
const FIXTURES = path.join(__dirname, '..', '..', 'tests', 'fixtures', 'jwt')

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const now = () => Number(process.hrtime.bigint()) / 1e6
/** The entry of `xs` whose `perS` is the median one (so its latencies go with it). */
const medianRun = (xs) => xs.find((x) => x.perS === median(xs.map((y) => y.perS)))

// ---------------------------------------------------------------------------------------------
// Child modes: a worker thread of the `memory` group, a process of the `race` group.

if (!isMainThread) {
  memoryWorker(workerData).catch((error) => { throw error })
} else if (process.argv[2] === '--race-child') {
  raceChild(JSON.parse(process.argv[3])).catch((error) => {
    console.error(error)
    process.exit(1)
  })
} else {
  main().then((code) => process.exit(code), (error) => {
    console.error(error)
    process.exit(1)
  })
}

/** Runs `fn(i)` for i < calls, stopping early after maxMs; answers { done, ms }. */
async function timed (fn, calls, maxMs, isAsync) {
  const start = now()
  let done = 0
  while (done < calls) {
    const end = Math.min(calls, done + 5_000)
    if (isAsync) {
      for (let i = done; i < end; i++) await fn(i)
    } else {
      for (let i = done; i < end; i++) fn(i)
    }
    done = end
    if (now() - start > maxMs) break
  }
  return { done, ms: now() - start }
}

/** One worker thread: its own engine and limiter over the same keys; runs a side when told. */
async function memoryWorker ({ keys: nkeys }) {
  const { Engine } = require('..')
  const { RateLimiterMemory } = peer('rate-limiter-flexible')
  const engine = Engine.fromObject({ rules: [RULE] })
  const limiter = new RateLimiterMemory({ points: 1e9, duration: 60 })
  const keys = nkeys === 1 ? ['alice'] : Array.from({ length: nkeys }, (_, i) => `user-${i}`)
  for (const key of keys) {
    engine.checkSync({ subject: key })
    await limiter.consume(key)
  }
  // The addon's own function under checkSync, and one taking the same arguments that does
  // nothing with them: the crossing, the floor under every call into the addon.
  const out = new Float64Array(64)
  const decide = engine._checkSync
  const crossing = engine._inner.crossingFunction()
  const sides = {
    floodwall: { fn: (i) => engine.checkSync({ subject: keys[i % nkeys] }), isAsync: false },
    peer: { fn: (i) => limiter.consume(keys[i % nkeys]), isAsync: true },
    native: { fn: (i) => decide(out, keys[i % nkeys]), isAsync: false },
    crossing: { fn: (i) => crossing(out, keys[i % nkeys]), isAsync: false }
  }
  parentPort.on('message', async ({ side, calls, maxMs }) => {
    if (side === 'exit') return process.exit(0)
    const { fn, isAsync } = sides[side]
    parentPort.postMessage(await timed(fn, calls, maxMs, isAsync))
  })
  parentPort.postMessage('ready')
}

/** One racing process: sets up its side, says ready, and on `go` tries `tries` times. */
async function raceChild ({ impl, url, key, limit, tries, inFlight }) {
  let attempt
  let close = () => {}
  if (impl === 'floodwall') {
    const { Engine } = require('..')
    const engine = Engine.fromObject({
      store: { kind: 'redis', url, prefix: 'fwrace:', timeout: '2s', on_error: 'deny' },
      rules: [{ name: 'race', key: 'subject', algorithm: 'fixed_window', limit, window: '1h' }]
    })
    attempt = async (key) => {
      const d = await engine.check({ subject: key })
      if (d.store !== 'redis') return 'error'
      return d.allowed ? 'admitted' : 'denied'
    }
  } else {
    const Redis = peer('ioredis')
    const client = new Redis(url)
    close = () => client.disconnect()
    if (impl === 'rate-limiter-flexible') {
      const { RateLimiterRedis } = peer('rate-limiter-flexible')
      const limiter = new RateLimiterRedis({ storeClient: client, points: limit, duration: 3600, keyPrefix: 'rlfrace' })
      attempt = (key) => limiter.consume(key).then(() => 'admitted', (r) => r instanceof Error ? 'error' : 'denied')
    } else if (impl === 'express-rate-limit') {
      const { RedisStore } = peer('rate-limit-redis')
      const store = new RedisStore({ sendCommand: (command, ...args) => client.call(command, ...args), prefix: 'erlrace:' })
      store.init({ windowMs: 3_600_000 })
      // What express-rate-limit's middleware does with the store's answer.
      attempt = (key) => store.increment(key).then(({ totalHits }) => totalHits <= limit ? 'admitted' : 'denied', () => 'error')
    } else {
      throw new Error(`unknown race implementation ${impl}`)
    }
  }
  await attempt(`${key}-warm-${process.pid}`) // connects (and loads scripts) before the start
  process.send('ready')
  await new Promise((resolve) => process.once('message', resolve))
  const counts = { admitted: 0, denied: 0, error: 0 }
  let next = 0
  const deadline = now() + 60_000
  async function lane () {
    while (next < tries && now() < deadline) {
      next++
      try {
        counts[await attempt(key)]++
      } catch {
        counts.error++
      }
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
  close()
  process.send(counts)
  process.exit(0)
}

// ---------------------------------------------------------------------------------------------
// The groups.

function settings (quick) {
  return {
    rounds: quick ? 1 : 5,
    expressRounds: quick ? 1 : 3,
    memory: { calls: quick ? 20_000 : 2_000_000, maxMs: quick ? 100 : 400 },
    redis: { one: quick ? 300 : 5_000, many: quick ? 2_000 : 40_000, maxMs: quick ? 300 : 1_000 },
    jwt: { calls: quick ? 200 : 100_000, maxMs: quick ? 100 : 400 },
    expressSeconds: quick ? 1 : 3,
    race: { limit: quick ? 100 : 1000, processes: 4 }
  }
}

/** A row of the shared schema (benches/compare/run.py reads it). */
function row (group, workload, unit, ours, theirs, extra = {}) {
  return {
    group,
    workload,
    lang: 'Node',
    unit,
    floodwall: ours,
    peer: theirs,
    ratio: theirs.value ? ours.value / theirs.value : null,
    ...extra
  }
}

async function memoryRows (s, rounds) {
  const rows = []
  for (const nkeys of [1, KEYS]) {
    for (const threads of [1, 2]) {
      const workers = Array.from({ length: threads }, () => new Worker(__filename, { workerData: { keys: nkeys } }))
      const replies = workers.map((w) => new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
      }))
      await Promise.all(replies)
      const run = (side, calls, maxMs) => Promise.all(workers.map((w) => new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
        w.postMessage({ side, calls, maxMs })
      })))
      const perS = (results) => results.reduce((sum, r) => sum + r.done / (r.ms / 1000), 0)
      await run('floodwall', s.calls / 10, s.maxMs / 4) // warm-up, not recorded
      await run('peer', s.calls / 10, s.maxMs / 4)
      const a = []
      const b = []
      for (let r = 0; r < rounds; r++) {
        a.push(perS(await run('floodwall', s.calls, s.maxMs)))
        b.push(perS(await run('peer', s.calls, s.maxMs)))
      }
      // On one key and one thread, the addon's function against the bare crossing.
      const c = []
      const d = []
      if (nkeys === 1 && threads === 1) {
        await run('native', s.calls / 10, s.maxMs / 4)
        await run('crossing', s.calls / 10, s.maxMs / 4)
        for (let r = 0; r < rounds; r++) {
          c.push(perS(await run('native', s.calls, s.maxMs)))
          d.push(perS(await run('crossing', s.calls, s.maxMs)))
        }
      }
      for (const w of workers) w.postMessage({ side: 'exit' })
      await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))))
      rows.push(row('memory',
        `in-process decision, ${nkeys === 1 ? '1 key' : '100,000 keys'}, ${threads} ${threads === 1 ? 'thread' : 'threads'}`,
        'decisions/s',
        { name: 'checkSync (worker_threads)', value: median(a) },
        { name: 'rate-limiter-flexible RateLimiterMemory', value: median(b) },
        { target: nkeys === KEYS && threads === 1 ? 1.5 : null }))
      if (c.length) {
        // Calls per second: within 1.3x of the crossing's time is at least 1/1.3 of its rate.
        rows.push(row('memory', 'in-process decision against a no-op addon call, 1 key, 1 thread',
          'calls/s',
          { name: "checkSync's addon function", value: median(c) },
          { name: 'no-op addon function, same arguments', value: median(d) },
          { target: 0.77 }))
      }
    }
  }
  return rows
}

/** Throughput and latency percentiles of up to `total` calls with `inFlight` outstanding. */
async function concurrent (call, total, inFlight, maxMs) {
  const latencies = new Float64Array(total)
  let next = 0
  let done = 0
  const start = now()
  async function lane () {
    while (next < total && now() - start < maxMs) {
      next++
      const t = now()
      await call()
      latencies[done++] = now() - t
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
  const seconds = (now() - start) / 1000
  const sorted = latencies.subarray(0, done).sort()
  return { done, perS: done / seconds, p50: sorted[Math.floor(done * 0.5)], p99: sorted[Math.floor(done * 0.99)] }
}

/** Redis's CPU time so far (user + sys, `INFO cpu`), in µs. */
async function serverCpu (client) {
  const info = await client.info('cpu')
  const field = (name) => Number((info.match(new RegExp(`${name}:([0-9.]+)`)) || [0, 0])[1])
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6
}

/** `concurrent`, with Redis's CPU time per decision (µs) over the run, and this process's
 * (every thread's: the JavaScript thread's and, for floodwall, its addon's). */
async function measured (client, call, total, inFlight, maxMs) {
  const before = await serverCpu(client)
  const mine = process.cpuUsage()
  const run = await concurrent(call, total, inFlight, maxMs)
  const used = process.cpuUsage(mine)
  run.cpuUs = (await serverCpu(client) - before) / run.done
  run.clientUs = (used.user + used.system) / run.done
  return run
}

/** The three layers of the atomic case: per-user limits per minute, hour and day. */
const LAYERS = [
  { ...RULE, name: 'per-user-minute', window: '1m' },
  { ...RULE, name: 'per-user-hour', window: '1h' },
  { ...RULE, name: 'per-user-day', window: '24h' }
]

async function redisRows (s, rounds, url) {
  const { Engine } = require('..')
  const { RateLimiterRedis } = peer('rate-limiter-flexible')
  const Redis = peer('ioredis')
  const client = new Redis(url)
  const info = new Redis(url)
  try {
    const engine = (rules) => Engine.fromObject({
      store: { kind: 'redis', url, prefix: 'fwbench:', timeout: '1s', on_error: 'deny' },
      rules
    })
    const limiter = (prefix, seconds) => new RateLimiterRedis({ storeClient: client, points: 1e9, duration: seconds, keyPrefix: prefix })
    const cases = [
      { layers: 1, engine: engine([RULE]), limiters: [limiter('rlfbench', 60)] },
      { layers: 3, engine: engine(LAYERS), limiters: [limiter('rlf1m', 60), limiter('rlf1h', 3600), limiter('rlf1d', 86400)] },
      // Counted in process between syncs: a bounded limit, not an exact one (docs/REDIS.md).
      { layers: 1, sync: true, engine: engine([{ ...RULE, sync: '100ms' }]), limiters: [limiter('rlfsync', 60)] }
    ]
    const rows = []
    for (const c of cases) {
      const first = await c.engine.check({ subject: 'alice' })
      if (first.store !== 'redis') throw new Error(`the engine decided on ${first.store}`)
      const ours = async () => {
        const d = await c.engine.check({ subject: 'alice' })
        if (!d.allowed) throw new Error(`floodwall denied (${d.store})`)
      }
      const theirs = c.layers === 1
        ? () => c.limiters[0].consume('alice')
        : () => Promise.all(c.limiters.map((l) => l.consume('alice')))
      await theirs()
      for (const inFlight of c.layers === 1 && !c.sync ? [1, 64] : [64]) {
        const total = inFlight === 1 ? s.one : s.many
        await concurrent(ours, total / 10, inFlight, s.maxMs / 4) // warm-up
        await concurrent(theirs, total / 10, inFlight, s.maxMs / 4)
        const a = []
        const b = []
        for (let r = 0; r < rounds; r++) {
          a.push(await measured(info, ours, total, inFlight, s.maxMs))
          b.push(await measured(info, theirs, total, inFlight, s.maxMs))
        }
        const x = medianRun(a)
        const y = medianRun(b)
        const what = c.sync
          ? '1 layer, floodwall sync = 100ms (bounded, not exact)'
          : c.layers === 1 ? '1 layer' : '3 layers (floodwall atomic; 3 consumes)'
        const theirName = c.layers === 1
          ? 'rate-limiter-flexible RateLimiterRedis (ioredis)'
          : '3 × rate-limiter-flexible RateLimiterRedis (ioredis)'
        rows.push(row('redis', `Redis decision, ${what}, 1 key, concurrency ${inFlight}`, 'decisions/s',
          { name: 'check (Promise)', value: x.perS, p50_ms: x.p50, p99_ms: x.p99 },
          { name: theirName, value: y.perS, p50_ms: y.p50, p99_ms: y.p99 },
          { target: inFlight === 64 && c.layers === 1 && !c.sync ? 1.5 : null }))
        // Redis's CPU per decision (lower is better: the target is a most).
        rows.push(row('redis', `Redis CPU per decision, ${what}, 1 key, concurrency ${inFlight}`, 'µs',
          { name: 'check (Promise)', value: x.cpuUs },
          { name: theirName, value: y.cpuUs },
          { atMost: inFlight === 64 && !c.sync ? 0.5 : null }))
        // Where the rest of a decision's cost is: this process's CPU (all its threads).
        rows.push(row('redis', `Node process CPU per decision, ${what}, 1 key, concurrency ${inFlight}`, 'µs',
          { name: 'check (Promise)', value: x.clientUs },
          { name: theirName, value: y.clientUs }))
      }
    }
    return rows
  } finally {
    client.disconnect()
    info.disconnect()
  }
}

/**
 * The JWT cases: a token per algorithm, minted now with the fixtures' keys (RSA 2048, P-256)
 * and claims, the floodwall configuration that verifies them and jsonwebtoken's options for
 * the same checks.
 */
function jwtCases () {
  const jwt = peer('jsonwebtoken')
  const pem = (name) => fs.readFileSync(path.join(FIXTURES, 'keys', name), 'utf8')
  const issuer = 'https://auth.floodwall.test'
  const audience = 'floodwall-api'
  const claims = { sub: 'alice', tenant: 't-1', realm_access: { roles: ['premium'] } }
  const cases = [
    { alg: 'HS256', kid: 'hmac', sign: SECRET, verify: crypto.createSecretKey(Buffer.from(SECRET)), key: { kid: 'hmac', secret: SECRET } },
    { alg: 'RS256', kid: 'rsa-1', sign: pem('rsa-1.key.pem'), verify: crypto.createPublicKey(pem('rsa-1.pub.pem')), key: { kid: 'rsa-1', pem: pem('rsa-1.pub.pem') } },
    { alg: 'ES256', kid: 'ec256-1', sign: pem('ec256-1.key.pem'), verify: crypto.createPublicKey(pem('ec256-1.pub.pem')), key: { kid: 'ec256-1', pem: pem('ec256-1.pub.pem') } }
  ]
  const auth = {
    algorithms: cases.map((c) => c.alg),
    keys: cases.map((c) => c.key),
    issuer: [issuer],
    audience: [audience],
    leeway: '30s',
    required_claims: ['tenant'],
    role_claim: 'realm_access.roles'
  }
  for (const c of cases) {
    c.token = jwt.sign(claims, c.sign, { algorithm: c.alg, keyid: c.kid, issuer, audience, expiresIn: '1d' })
    c.options = { algorithms: [c.alg], issuer, audience, clockTolerance: 30 }
  }
  return { cases, auth }
}

async function jwtRows (s, rounds) {
  const { Engine } = require('..')
  const jwt = peer('jsonwebtoken')
  const { cases, auth } = jwtCases()
  const engine = Engine.fromObject({ auth })
  const rows = []
  for (const c of cases) {
    const header = `Bearer ${c.token}`
    if (engine.authenticate(header).subject !== 'alice') throw new Error(`floodwall refused the ${c.alg} token`)
    if (jwt.verify(c.token, c.verify, c.options).sub !== 'alice') throw new Error(`jsonwebtoken refused the ${c.alg} token`)
    const ours = () => engine.authenticate(header)
    const theirs = () => jwt.verify(c.token, c.verify, c.options)
    await timed(ours, s.calls / 10, s.maxMs / 4)
    await timed(theirs, s.calls / 10, s.maxMs / 4)
    const a = []
    const b = []
    for (let r = 0; r < rounds; r++) {
      const x = await timed(ours, s.calls, s.maxMs)
      const y = await timed(theirs, s.calls, s.maxMs)
      a.push(x.done / (x.ms / 1000))
      b.push(y.done / (y.ms / 1000))
    }
    rows.push(row('jwt', `JWT verification, ${c.alg}`, 'verifications/s',
      { name: 'authenticate (no cache)', value: median(a) },
      { name: 'jsonwebtoken verify, pre-parsed key', value: median(b) },
      { target: c.alg === 'HS256' ? 3 : null }))
  }
  return rows
}

/** Requests per second of an app variant under autocannon, its own process serving. */
async function load (variant, token, seconds, url) {
  const autocannon = peer('autocannon')
  const child = spawn(process.execPath, [path.join(__dirname, 'express_app.js'), variant, SECRET],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FW_REDIS_URL: url || '' } })
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${variant} app did not start`)), 10_000)
      child.stdout.on('data', (chunk) => {
        const match = /port (\d+)/.exec(String(chunk))
        if (match) { clearTimeout(timer); resolve(Number(match[1])) }
      })
      child.once('exit', (code) => reject(new Error(`${variant} app exited with ${code}`)))
    })
    const result = await autocannon({
      url: `http://127.0.0.1:${port}/api/hello`,
      connections: 50,
      duration: seconds,
      headers: { authorization: `Bearer ${token}` }
    })
    if (result.non2xx > 0 || result.errors > 0) {
      throw new Error(`${variant}: ${result.non2xx} non-2xx answers, ${result.errors} errors`)
    }
    return { perS: result.requests.average, p50: result.latency.p50, p99: result.latency.p99 }
  } finally {
    child.kill('SIGTERM')
  }
}

const EXPRESS = {
  bare: 'bare Express',
  guard: 'guard(), memory store',
  peer: 'jsonwebtoken + express-rate-limit (memory)',
  rlf: 'jsonwebtoken + rate-limiter-flexible (memory)',
  'guard-redis': 'guard(), Redis store',
  'peer-redis': 'jsonwebtoken + express-rate-limit + rate-limit-redis',
  'rlf-redis': 'jsonwebtoken + rate-limiter-flexible (Redis)'
}

async function expressRows (seconds, rounds, url) {
  const jwt = peer('jsonwebtoken')
  const token = jwt.sign({ sub: 'alice', role: 'premium' }, SECRET, { algorithm: 'HS256', expiresIn: '1d' })
  const variants = Object.keys(EXPRESS).filter((v) => url || !v.endsWith('-redis'))
  const runs = Object.fromEntries(variants.map((v) => [v, []]))
  for (let r = 0; r < rounds; r++) {
    for (const variant of variants) runs[variant].push(await load(variant, token, seconds, url))
  }
  const m = Object.fromEntries(variants.map((v) => [v, medianRun(runs[v])]))
  const side = (v) => ({ name: EXPRESS[v], value: m[v].perS, p50_ms: m[v].p50, p99_ms: m[v].p99 })
  const rows = [
    row('express', 'Express app, memory store (autocannon, 50 connections)', 'requests/s', side('guard'), side('bare'), { target: 0.85 }),
    row('express', 'Express app, memory store (autocannon, 50 connections)', 'requests/s', side('guard'), side('peer')),
    row('express', 'Express app, memory store (autocannon, 50 connections)', 'requests/s', side('guard'), side('rlf'))
  ]
  if (url) {
    rows.push(
      row('express', 'Express app, Redis store (autocannon, 50 connections)', 'requests/s', side('guard-redis'), side('peer-redis')),
      row('express', 'Express app, Redis store (autocannon, 50 connections)', 'requests/s', side('guard-redis'), side('rlf-redis')))
  }
  return rows
}

/** `processes` processes of `impl` racing on one fresh key: how many were admitted. */
async function race (impl, url, limit, processes) {
  const key = `race-${impl}-${process.pid}-${Date.now()}`
  const spec = { impl, url, key, limit, tries: limit, inFlight: 8 }
  const windowOf = (t) => Math.floor(t / 3_600_000)
  for (let attempt = 0; attempt < 2; attempt++) {
    const children = Array.from({ length: processes }, () =>
      fork(__filename, ['--race-child', JSON.stringify({ ...spec, key: `${spec.key}-${attempt}` })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
    const killer = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), 120_000)
    try {
      const replies = (c) => new Promise((resolve, reject) => {
        c.once('message', resolve)
        c.once('exit', (code) => reject(new Error(`${impl} race process exited with ${code}`)))
      })
      await Promise.all(children.map(replies))
      const results = children.map(replies)
      const started = Date.now()
      for (const c of children) c.send('go')
      const counts = await Promise.all(results)
      // floodwall's fixed windows are aligned to the clock (the peers' start at the first hit):
      // a race across an hour's boundary would rightly admit twice. Run it again then.
      if (impl === 'floodwall' && windowOf(started) !== windowOf(Date.now())) continue
      const sum = (k) => counts.reduce((acc, c) => acc + c[k], 0)
      return { admitted: sum('admitted'), denied: sum('denied'), errors: sum('error'), attempts: limit * processes }
    } finally {
      clearTimeout(killer)
      for (const c of children) c.kill('SIGKILL')
    }
  }
  throw new Error('the race crossed a window boundary twice')
}

async function raceRows (s, url) {
  const { limit, processes } = s
  const ours = await race('floodwall', url, limit, processes)
  const rows = []
  for (const [impl, name] of [['rate-limiter-flexible', 'rate-limiter-flexible RateLimiterRedis (ioredis)'],
    ['express-rate-limit', 'express-rate-limit + rate-limit-redis (ioredis)']]) {
    const theirs = await race(impl, url, limit, processes)
    rows.push(row('race',
      `Redis race: ${processes} processes × ${limit} tries on one key, limit ${limit}`, 'admitted',
      { name: 'check (Promise)', value: ours.admitted, errors: ours.errors },
      { name, value: theirs.admitted, errors: theirs.errors },
      { limit, attempts: ours.attempts, ratio: null }))
  }
  return rows
}

// ---------------------------------------------------------------------------------------------

function parseArgs (argv) {
  const value = (flag) => { const i = argv.indexOf(flag); return i >= 0 ? argv[i + 1] : undefined }
  const quick = argv.includes('--quick')
  const only = argv.flatMap((a, i) => argv[i - 1] === '--only' ? a.split(',') : [])
  return {
    quick,
    json: argv.includes('--json'),
    rounds: Number(value('--rounds')) || 0,
    redis: value('--redis'),
    only: only.length ? only : ['memory', 'redis', 'jwt', 'express', 'race']
  }
}

const fmt = (x) => x >= 1e6 ? `${(x / 1e6).toFixed(2)} M/s` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k/s` : `${x.toFixed(0)}/s`
const ms = (x) => x === undefined ? '' : `${x.toFixed(x < 1 ? 3 : 2)} ms`

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const s = settings(args.quick)
  const rounds = args.rounds || s.rounds
  const { version } = require('..')
  let server = null
  let url = args.redis
  const needsRedis = args.only.some((g) => ['redis', 'express', 'race'].includes(g))
  if (!url && needsRedis) {
    const { RedisServer } = require(path.join(__dirname, '..', 'test', 'redis_server.js'))
    server = await RedisServer.start()
    url = server.url
  }
  const started = now()
  const rows = []
  try {
    if (args.only.includes('memory')) rows.push(...await memoryRows(s.memory, rounds))
    if (args.only.includes('redis')) rows.push(...await redisRows(s.redis, rounds, url))
    if (args.only.includes('jwt')) rows.push(...await jwtRows(s.jwt, rounds))
    if (args.only.includes('express')) rows.push(...await expressRows(s.expressSeconds, args.rounds || s.expressRounds, url))
    if (args.only.includes('race')) rows.push(...await raceRows(s.race, url))
  } finally {
    if (server) await server.stop()
  }
  const meta = {
    lang: 'Node',
    runtime: `Node ${process.versions.node}`,
    floodwall: version,
    versions: Object.fromEntries(['rate-limiter-flexible', 'ioredis', 'express', 'express-rate-limit',
      'rate-limit-redis', 'jsonwebtoken', 'autocannon'].map((p) => [p, peerVersion(p)])),
    rounds,
    quick: args.quick,
    seconds: (now() - started) / 1000
  }
  if (args.json) {
    console.log(JSON.stringify({ meta, rows }))
    return 0
  }
  console.log(`floodwall ${version} (Node package) vs peers, same run — Node ${process.versions.node}, ` +
    `${os.cpus().length} CPUs, median of ${rounds} round(s)\n`)
  console.log('| workload | floodwall | peer | peer figure | floodwall / peer | target |')
  console.log('|---|---|---|---|---|---|')
  const failed = []
  for (const r of rows) {
    const figure = (side) => r.unit === 'admitted'
      ? `${side.value} of ${r.attempts} admitted (${side.value - r.limit >= 0 ? '+' : ''}${side.value - r.limit})`
      : r.unit === 'µs'
        ? `${side.value.toFixed(1)} µs`
        : `${fmt(side.value)}${side.p99_ms !== undefined ? ` (p50 ${ms(side.p50_ms)}, p99 ${ms(side.p99_ms)})` : ''}`
    let verdict = ''
    const bound = r.target ? `≥ ${r.target}×` : r.atMost ? `≤ ${r.atMost}×` : null
    if (bound && args.quick) verdict = `${bound} (not judged in --quick)`
    else if (bound) {
      const ok = r.target ? r.ratio >= r.target : r.ratio <= r.atMost
      verdict = `${bound} ${ok ? 'met' : 'NOT met'}`
      if (!ok) failed.push(r.workload)
    }
    console.log(`| ${r.workload} | ${figure(r.floodwall)} | ${r.peer.name} | ${figure(r.peer)} | ` +
      `${r.ratio === null ? '' : `${r.ratio.toFixed(2)}×`} | ${verdict} |`)
  }
  if (!args.quick && failed.length) {
    console.log(`\ntargets not met: ${failed.join(', ')}`)
    return 1
  }
  return 0
}
