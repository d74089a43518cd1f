#!/usr/bin/env node
'use strict'
/**
 * floodwall's Node package beside the libraries an Express developer would use instead,
 * measured in the same run on the same machine, printed as one table (and as JSON with --json).
 *
 * Rows (floodwall vs peer, same keys, same limits, both always admitting):
 * - `checkSync`, memory store, 1 key and 100,000 keys, vs rate-limiter-flexible's
 *   `RateLimiterMemory.consume` (awaited, as it is used);
 * - `check` on Redis with 64 requests in flight, vs `RateLimiterRedis` on ioredis, against a
 *   local redis-server started for the run: throughput and p50/p99 latency;
 * - HS256 verification: `engine.authenticate` (no token cache) vs jsonwebtoken's `verify` with
 *   a pre-parsed key (a KeyObject);
 * - an Express app under autocannon (127.0.0.1, 50 connections, a few seconds): bare, guarded
 *   by floodwall's `guard()`, and guarded by jsonwebtoken + express-rate-limit
 *   (`bench/express_app.js`, each in its own process). The target is floodwall's guarded app
 *   within 15 % of the bare one.
 *
 * Each row alternates the two sides for --rounds rounds (default 5) of a fixed number of
 * calls and reports the median round. Bounded in calls and time.
 * Usage: node bench/compare.js [--quick] [--rounds N] [--only memory|redis|jwt|express] [--json]
 * (`make bench-node` installs the peers pinned in bench/package.json and runs it.)
 */

const crypto = require('node:crypto')
const os = require('node:os')
const path = require('node:path')

const { Engine, version } = require('..')
const { RedisServer } = require(path.join(__dirname, '..', 'test', 'redis_server.js'))

const peers = path.join(__dirname, 'node_modules')
const { RateLimiterMemory, RateLimiterRedis } = require(path.join(peers, 'rate-limiter-flexible'))
const Redis = require(path.join(peers, 'ioredis'))
const jwt = require(path.join(peers, 'jsonwebtoken'))

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const rounds = quick ? 1 : Number(args[args.indexOf('--rounds') + 1] || 0) || 5
const only = args.filter((_, i) => args[i - 1] === '--only')
const wants = (group) => only.length === 0 || only.includes(group)

const KEYS = 100_000
const SECRET = 'floodwall-bench-secret-0123456789-abcdefghijklmnop'
const RULE = { name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1e9, window: '1m' }
const MAX_ROUND_MS = quick ? 500 : 8_000

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const now = () => Number(process.hrtime.bigint()) / 1e6

/** Calls per second of `fn(i)` for i < calls (stopping early after MAX_ROUND_MS). */
async function rate (fn, calls, isAsync) {
  const start = now()
  let done = 0
  while (done < calls) {
    const end = Math.min(calls, done + 10_000)
    if (isAsync) {
      for (let i = done; i < end; i++) await fn(i)
    } else {
      for (let i = done; i < end; i++) fn(i)
    }
    done = end
    if (now() - start > MAX_ROUND_MS) break
  }
  return done / ((now() - start) / 1000)
}

async function compare (row, ours, peer, calls, target, peerName) {
  await ours.fn(0)
  await peer.fn(0)
  const a = []
  const b = []
  for (let r = 0; r < rounds; r++) {
    a.push(await rate(ours.fn, calls, ours.isAsync))
    b.push(await rate(peer.fn, calls, peer.isAsync))
  }
  const oursPerS = median(a)
  const peerPerS = median(b)
  return { row, floodwall: oursPerS, peer: peerName, peerPerS, ratio: oursPerS / peerPerS, target }
}

async function memoryRows () {
  const calls = quick ? 2_000 : 300_000
  const engine = Engine.fromObject({ rules: [RULE] })
  const limiter = new RateLimiterMemory({ points: 1e9, duration: 60 })
  const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
  const rows = [await compare('checkSync, memory store, 1 key',
    { fn: () => engine.checkSync({ subject: 'alice' }) },
    { fn: () => limiter.consume('alice'), isAsync: true },
    calls, 1, 'rate-limiter-flexible RateLimiterMemory')]
  for (const key of keys) {
    engine.checkSync({ subject: key })
    await limiter.consume(key)
  }
  rows.push(await compare('checkSync, memory store, 100,000 keys',
    { fn: (i) => engine.checkSync({ subject: keys[i % KEYS] }) },
    { fn: (i) => limiter.consume(keys[i % KEYS]), isAsync: true },
    calls, 1.5, 'rate-limiter-flexible RateLimiterMemory'))
  return rows
}

/** Throughput and latency percentiles of `total` calls with `inFlight` outstanding at once. */
async function concurrent (call, total, inFlight) {
  const latencies = new Float64Array(total)
  let next = 0
  const start = now()
  async function worker () {
    while (next < total) {
      const i = next++
      const t = now()
      await call(i)
      latencies[i] = now() - t
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
  const seconds = (now() - start) / 1000
  latencies.sort()
  return { perS: total / seconds, p50: latencies[Math.floor(total * 0.5)], p99: latencies[Math.floor(total * 0.99)] }
}

async function redisRows () {
  const server = await RedisServer.start()
  const client = new Redis(server.url, { enableOfflineQueue: true, lazyConnect: false })
  try {
    const engine = Engine.fromObject({
      store: { kind: 'redis', url: server.url, prefix: 'fwbench:', timeout: '1s' },
      rules: [RULE]
    })
    const limiter = new RateLimiterRedis({ storeClient: client, points: 1e9, duration: 60, keyPrefix: 'rlfbench' })
    const first = await engine.check({ subject: 'alice' })
    if (first.store !== 'redis') throw new Error(`the engine decided on ${first.store}`)
    await limiter.consume('alice')
    const total = quick ? 500 : 40_000
    const rows = []
    for (const inFlight of [1, 64]) {
      const a = []
      const b = []
      for (let r = 0; r < rounds; r++) {
        a.push(await concurrent(() => engine.check({ subject: 'alice' }), inFlight === 1 ? total / 8 : total, inFlight))
        b.push(await concurrent(() => limiter.consume('alice'), inFlight === 1 ? total / 8 : total, inFlight))
      }
      const pick = (xs) => xs.find((x) => x.perS === median(xs.map((y) => y.perS)))
      const ours = pick(a)
      const peer = pick(b)
      rows.push({
        row: `check, Redis, 1 key, ${inFlight} in flight`,
        floodwall: ours.perS,
        peer: 'rate-limiter-flexible RateLimiterRedis (ioredis)',
        peerPerS: peer.perS,
        ratio: ours.perS / peer.perS,
        target: inFlight === 64 ? 1 : null,
        latency: `p50 ${ours.p50.toFixed(2)} / p99 ${ours.p99.toFixed(2)} ms vs ${peer.p50.toFixed(2)} / ${peer.p99.toFixed(2)} ms`
      })
    }
    engine._inner && engine.purgeExpired()
    return rows
  } finally {
    client.disconnect()
    await server.stop()
  }
}

async function jwtRows () {
  const calls = quick ? 500 : 50_000
  const token = jwt.sign({ sub: 'alice', role: 'premium' }, SECRET, { algorithm: 'HS256', expiresIn: '1d' })
  const header = `Bearer ${token}`
  const auth = { algorithms: ['HS256'], keys: [{ secret: SECRET }], role_claim: 'role' }
  const verify = Engine.fromObject({ auth })
  const cached = Engine.fromObject({ auth: { ...auth, cache: { max_entries: 1000 } } })
  const key = crypto.createSecretKey(Buffer.from(SECRET))
  if (verify.authenticate(header).subject !== 'alice') throw new Error('floodwall refused the token')
  if (jwt.verify(token, key, { algorithms: ['HS256'] }).sub !== 'alice') throw new Error('jsonwebtoken refused the token')
  const peer = { fn: () => jwt.verify(token, key, { algorithms: ['HS256'] }) }
  return [
    await compare('HS256 verification', { fn: () => verify.authenticate(header) }, peer, calls, 3,
      'jsonwebtoken verify, pre-parsed key'),
    await compare("HS256, floodwall's token cache", { fn: () => cached.authenticate(header) }, peer, calls, null,
      'jsonwebtoken verify, pre-parsed key')
  ]
}

/** Requests per second of an app variant under autocannon, its own process serving. */
async function load (variant, token, seconds) {
  const { spawn } = require('node:child_process')
  const autocannon = require(path.join(peers, 'autocannon'))
  const child = spawn(process.execPath, [path.join(__dirname, 'express_app.js'), variant, SECRET],
    { stdio: ['ignore', 'pipe', 'inherit'] })
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

async function expressRows () {
  const seconds = quick ? 1 : 5
  const token = jwt.sign({ sub: 'alice', role: 'premium' }, SECRET, { algorithm: 'HS256', expiresIn: '1d' })
  const runs = { bare: [], guard: [], peer: [] }
  for (let r = 0; r < rounds; r++) {
    for (const variant of Object.keys(runs)) runs[variant].push(await load(variant, token, seconds))
  }
  const pick = (xs) => xs.find((x) => x.perS === median(xs.map((y) => y.perS)))
  const bare = pick(runs.bare)
  const guarded = pick(runs.guard)
  const peer = pick(runs.peer)
  const latency = (x) => `p50 ${x.p50} / p99 ${x.p99} ms`
  return [
    { row: 'Express + guard() vs bare Express (autocannon, 50 connections)', floodwall: guarded.perS,
      peer: 'bare Express', peerPerS: bare.perS, ratio: guarded.perS / bare.perS, target: 0.85,
      latency: `${latency(guarded)} vs ${latency(bare)}` },
    { row: 'Express + guard() vs Express + jsonwebtoken + express-rate-limit', floodwall: guarded.perS,
      peer: 'jsonwebtoken + express-rate-limit', peerPerS: peer.perS, ratio: guarded.perS / peer.perS, target: null,
      latency: `${latency(guarded)} vs ${latency(peer)}; the peer stack keeps ${(100 * peer.perS / bare.perS).toFixed(0)} % of bare` }
  ]
}

const fmt = (x) => x >= 1e6 ? `${(x / 1e6).toFixed(2)} M/s` : `${(x / 1e3).toFixed(1)} k/s`

async function main () {
  const rows = []
  if (wants('memory')) rows.push(...await memoryRows())
  if (wants('redis')) rows.push(...await redisRows())
  if (wants('jwt')) rows.push(...await jwtRows())
  if (wants('express')) rows.push(...await expressRows())
  console.log(`floodwall ${version} (Node package) vs peers, same run — Node ${process.versions.node}, ` +
    `${os.cpus().length} CPUs, median of ${rounds} round(s)\n`)
  console.log('| workload | floodwall | peer | peer/s | ratio | target |')
  console.log('|---|---|---|---|---|---|')
  const failed = []
  for (const r of rows) {
    let verdict = ''
    if (r.target !== null && quick) verdict = `≥ ${r.target}× (not judged in --quick)`
    else if (r.target !== null) {
      const ok = r.ratio >= r.target
      verdict = `≥ ${r.target}× ${ok ? 'met' : 'NOT met'}`
      if (!ok) failed.push(r.row)
    }
    const extra = r.latency ? ` (${r.latency})` : ''
    console.log(`| ${r.row} | ${fmt(r.floodwall)} | ${r.peer} | ${fmt(r.peerPerS)} | ${r.ratio.toFixed(2)}× | ${verdict}${extra} |`)
  }
  if (args.includes('--json')) console.log(JSON.stringify(rows, null, 2))
  if (!quick && failed.length) {
    console.log(`\ntargets not met: ${failed.join(', ')}`)
    process.exitCode = 1
  }
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
