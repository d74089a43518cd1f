'use strict'
/**
 * The launcher (`node demo.js`, what `make demo` runs) as a user meets it: it starts the four
 * upstreams and the gateway as child processes on the ports the environment names, prints
 * working tokens and curl lines, and leaves no process behind when it is stopped — by SIGTERM,
 * by SIGKILL (the children notice), or because a child could not start. Bad settings stop it
 * before anything starts, with a message naming the variable.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')

const { request, waitUntil, redisHarness, EXAMPLE } = require('./helpers.js')

const { freePort } = redisHarness()
/** A bound on the launcher's start (not an assertion). */
const START_BOUND_MS = 30_000

/** Whether `pid` is a live process (a zombie counts as gone). */
function alive (pid) {
  let stat
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return false
  }
  return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
}

/** The pids of `pid`'s children. */
function childrenOf (pid) {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).split('\n').map((s) => s.trim()).filter(Boolean).map(Number)
  } catch {
    return [] // ps exits 1 when there is none
  }
}

/** Five distinct free ports: the gateway's and the four upstreams'. */
async function freePorts () {
  const ports = new Set()
  while (ports.size < 5) ports.add(await freePort())
  return [...ports]
}

/**
 * Starts `node demo.js` with `env` added; resolves with `{ child, output(), exited }` once its
 * output contains `until` (or it exited).
 */
async function launch (env, until = 'demo: running') {
  const child = spawn(process.execPath, [path.join(EXAMPLE, 'demo.js')], {
    cwd: EXAMPLE,
    env: { ...process.env, JWT_SECRET: '', REDIS_URL: '', FLAKY_FAILURE_RATE: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  child.stderr.on('data', (chunk) => { out += chunk })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  let done = false
  exited.then(() => { done = true })
  await waitUntil(() => done || out.includes(until), { attempts: START_BOUND_MS / 50, pauseMs: 50 })
  return { child, output: () => out, exited }
}

test('the demo serves with the printed tokens, and SIGTERM stops every process it started', async (t) => {
  const [gatewayPort, ...upstreamPorts] = await freePorts()
  const demo = await launch({ GATEWAY_PORT: String(gatewayPort), UPSTREAM_PORTS: upstreamPorts.join(',') })
  t.after(() => { if (alive(demo.child.pid)) demo.child.kill('SIGKILL') })
  const out = demo.output()
  assert.match(out, /demo: running/, out)

  const children = childrenOf(demo.child.pid)
  assert.equal(children.length, 5, `children: ${children}`)

  const url = `http://127.0.0.1:${gatewayPort}`
  assert.ok(out.includes(`${url}/dashboard`))
  assert.ok(out.includes(`${url}/metrics`))
  assert.match(out, /fixed DEMO secret/)
  // The one line that floods it (flood.test.js runs flood.js itself).
  assert.ok(out.includes(`make flood URL=${url}   # floods as alice (free), then bob (premium), each until limited`), out)
  const free = /export FREE_TOKEN=(\S+)/.exec(out)[1]
  const premium = /export PREMIUM_TOKEN=(\S+)/.exec(out)[1]
  const orders = await request(`${url}/api/orders`, { token: free })
  assert.equal(orders.status, 200)
  assert.equal(orders.json.service, 'orders')
  const product = await request(`${url}/api/catalog/esp-100`, { token: premium })
  assert.equal(product.status, 200)
  assert.equal(product.json.item.sku, 'esp-100')
  assert.equal((await request(`${url}/api/orders`)).status, 401)
  // Every route the curl lines name answers a premium caller.
  const routes = new Set([...out.matchAll(/'http:\/\/127\.0\.0\.1:\d+(\/api\/[^'?]*)/g)].map((m) => m[1]))
  assert.deepEqual([...routes].sort(), ['/api/catalog', '/api/catalog/esp-100', '/api/orders', '/api/orders/2'])
  for (const route of routes) assert.equal((await request(`${url}${route}`, { token: premium })).status, 200, route)

  demo.child.kill('SIGTERM')
  const { code } = await demo.exited
  assert.equal(code, 0)
  for (const pid of children) assert.equal(alive(pid), false, `child ${pid} is still running`)
})

test('when the launcher is killed outright, its children stop by themselves', async (t) => {
  const [gatewayPort, ...upstreamPorts] = await freePorts()
  const demo = await launch({ GATEWAY_PORT: String(gatewayPort), UPSTREAM_PORTS: upstreamPorts.join(',') })
  const children = childrenOf(demo.child.pid)
  t.after(() => { for (const pid of children) { try { process.kill(pid, 'SIGKILL') } catch {} } })
  assert.equal(children.length, 5, demo.output())

  demo.child.kill('SIGKILL')
  await demo.exited
  const gone = await waitUntil(() => children.every((pid) => !alive(pid)), { attempts: 250, pauseMs: 40 })
  assert.ok(gone, `still running: ${children.filter(alive)}`)
})

test('a port in use stops the demo with status 1 and takes down what it had started', async (t) => {
  const [gatewayPort, ...upstreamPorts] = await freePorts()
  const blocker = net.createServer()
  await new Promise((resolve) => blocker.listen(gatewayPort, '127.0.0.1', resolve))
  t.after(() => blocker.close())

  const demo = await launch({ GATEWAY_PORT: String(gatewayPort), UPSTREAM_PORTS: upstreamPorts.join(',') }, 'never printed')
  const { code } = await demo.exited
  assert.equal(code, 1)
  assert.match(demo.output(), new RegExp(`port ${gatewayPort} is in use`))
  assert.deepEqual(childrenOf(demo.child.pid), [])
  // The upstreams it had started are gone: their ports are free again.
  for (const port of upstreamPorts) {
    await new Promise((resolve, reject) => {
      const probe = net.createServer()
      probe.once('error', reject)
      probe.listen(port, '127.0.0.1', () => probe.close(resolve))
    })
  }
})

test('bad settings stop the demo before anything starts, naming the variable', async () => {
  const cases = [
    [{ GATEWAY_PORT: 'eighty' }, /GATEWAY_PORT must be a port number from 1 to 65535, not "eighty"/],
    [{ GATEWAY_PORT: '70000' }, /GATEWAY_PORT must be a port number/],
    [{ UPSTREAM_PORTS: '9001,9002' }, /UPSTREAM_PORTS must list 4 ports/],
    [{ GATEWAY_PORT: '9001' }, /must be five different ports/],
    [{ REDIS_URL: 'localhost:6379' }, /REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ JWT_SECRET: 'short' }, /JWT_SECRET must be at least 32 bytes for HS256, not 5/],
    [{ FLAKY_FAILURE_RATE: '2' }, /FLAKY_FAILURE_RATE must be a number from 0 to 1/]
  ]
  for (const [env, message] of cases) {
    const demo = await launch(env, 'never printed')
    const { code } = await demo.exited
    assert.equal(code, 2, `${JSON.stringify(env)}: ${demo.output()}`)
    assert.match(demo.output(), message)
    assert.doesNotMatch(demo.output(), /upstreams orders-a/)
  }
})
