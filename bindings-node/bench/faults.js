#!/usr/bin/env node
'use strict'
/**
 * How long `check()` and `checkMany()` wait when Redis stops answering: a redis-server of its
 * own on a free 127.0.0.1 port is paused (`CLIENT PAUSE … ALL`, a server that hangs) and a burst
 * of calls is started at once, more than the dispatcher has threads; each call's wait is
 * measured until it settles (on the fallback). Between rounds the pause ends and the engine
 * waits (bounded) until it is back on Redis, so that every round starts with the breaker
 * closed and the burst pays the deadline.
 *
 * Sides: `check()` (the batching dispatcher) and `checkMany([one])` (the worker pool), each
 * in bursts. Prints one table: per side, the calls, p50, p99 and max wait against the bound, the store
 * timeout plus 5 ms.
 * Usage: node bench/faults.js [--rounds N] [--burst N] [--timeout-ms N]
 */

const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { Engine } = require('..')

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}
const ROUNDS = arg('--rounds', 5)
const BURST = arg('--burst', 64)
const TIMEOUT_MS = arg('--timeout-ms', 20)
const PAUSE_MS = Math.max(300, TIMEOUT_MS * 10)

const now = () => Number(process.hrtime.bigint()) / 1e6
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** One command to Redis on a connection of its own; resolves with the raw reply. */
function command (port, text) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no reply to ${text}`)) }, 2000)
    socket.on('data', (chunk) => {
      reply += chunk
      if (reply.endsWith('\r\n')) { clearTimeout(timer); socket.end(); resolve(reply) }
    })
    socket.on('error', (e) => { clearTimeout(timer); reject(e) })
    socket.write(text + '\r\n')
  })
}

async function startRedis () {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', os.tmpdir()], { stdio: 'ignore' })
  const deadline = now() + 10_000
  for (;;) {
    try {
      if ((await command(port, 'PING')).startsWith('+PONG')) return { port, child }
    } catch {}
    if (now() > deadline) throw new Error('redis-server did not answer PING within 10 s')
    await sleep(20)
  }
}

async function backOnRedis (engine) {
  const deadline = now() + 5000
  while (engine.storeHealth.state !== 'ok') {
    if (now() > deadline) throw new Error(`not back on Redis within 5 s: ${JSON.stringify(engine.storeHealth)}`)
    await sleep(10)
  }
}

async function main () {
  const { port, child } = await startRedis()
  try {
    const engine = Engine.fromObject({
      store: { kind: 'redis', url: `redis://127.0.0.1:${port}`, prefix: 'fwfault:', timeout: `${TIMEOUT_MS}ms`, on_error: 'fallback', deny_cache: false },
      rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1e9, window: '1m' }]
    })
    const waits = { 'check()': [], 'checkMany([one])': [] }
    for (let round = 0; round < ROUNDS; round++) {
      for (const side of Object.keys(waits)) {
        await backOnRedis(engine)
        await command(port, `CLIENT PAUSE ${PAUSE_MS} ALL`)
        const started = now()
        const calls = []
        for (let i = 0; i < BURST; i++) {
          const request = { subject: `u${i}` }
          const call = side === 'check()' ? engine.check(request) : engine.checkMany([request])
          calls.push(call.then(() => waits[side].push(now() - started)))
        }
        await Promise.all(calls)
        await sleep(PAUSE_MS + 50) // the pause ends by itself (UNPAUSE would wait behind it)
      }
    }
    const bound = TIMEOUT_MS + 5
    const rows = Object.entries(waits).map(([side, xs]) => ({
      side,
      calls: xs.length,
      'p50 ms': quantile(xs, 0.5).toFixed(1),
      'p99 ms': quantile(xs, 0.99).toFixed(1),
      'max ms': Math.max(...xs).toFixed(1),
      'bound ms': bound,
      within: Math.max(...xs) <= bound ? 'yes' : 'no'
    }))
    console.log(`Redis paused (CLIENT PAUSE ALL), store.timeout = ${TIMEOUT_MS} ms, bursts of ${BURST} check() calls, ${ROUNDS} rounds (${path.basename(__filename)})`)
    console.table(rows)
  } finally {
    child.kill()
  }
}

main().catch((e) => { console.error(e); process.exit(1) })
