'use strict'
/**
 * The gateway run from a configuration file (`GATEWAY_CONFIG`) reloads it while it serves: when
 * the file changes (watched, debounced) and on SIGHUP. A rule whose limits changed starts
 * afresh, an unchanged one keeps its count, an invalid file changes nothing and the log and the
 * dashboard's data say why; requests in flight across reloads neither fail nor over-admit.
 * Limits do not refill during a test (one token per 100 s), so every count is exact.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { Engine } = require('floodwall')
const { startStack, writeAtomically, request, waitUntil, redisHarness, EXAMPLE } = require('./helpers.js')

const LIMITS = {
  free: { capacity: 3, refill_rate: 0.01 },
  premium: { capacity: 1000, refill_rate: 0.01 },
  orderWrites: { limit: 3, window: '1h' }
}
/** A bound on a child gateway's start and on each line awaited from it (not an assertion). */
const CHILD_BOUND_MS = 20_000

function temporaryDir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-gateway-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function statuses (url, token, n) {
  const out = []
  for (let i = 0; i < n; i++) out.push((await request(url, { token })).status)
  return out
}

test('a change of the file is put in force: a changed rule starts afresh, an invalid file changes nothing', async (t) => {
  const stack = await startStack({ limits: LIMITS, configDir: temporaryDir(t), reloadDebounceMs: 50 })
  t.after(() => stack.close())
  const url = `${stack.url}/api/catalog`
  const free = stack.token('alice', 'free')
  assert.deepEqual(await statuses(url, free, 4), [200, 200, 200, 429])

  // A larger bucket for free callers: `per-user` restarts, the other rules keep their counts.
  stack.writeConfig({ limits: { ...LIMITS, free: { capacity: 5, refill_rate: 0.01 } } })
  assert.ok(await waitUntil(() => stack.reloader.reloads === 1), 'the change was reloaded')
  const { summary, trigger } = stack.reloader.last
  assert.equal(trigger, 'file change')
  assert.deepEqual(summary.rules, [
    { name: 'per-user', change: 'restarted' },
    { name: 'order-writes', change: 'unchanged' },
    { name: 'global', change: 'unchanged' }
  ])
  assert.deepEqual(summary.upstreams, { kept: 4, started: 0, removed: 0 })
  assert.equal(summary.auth_changed, false)
  const restarted = await request(url, { token: free })
  assert.equal(restarted.status, 200)
  assert.equal(restarted.headers['ratelimit-limit'], '5')
  assert.equal(restarted.headers['ratelimit-remaining'], '4')

  // A file that does not validate: refused, named, and the limits in force stay.
  const config = JSON.parse(fs.readFileSync(stack.configFile, 'utf8'))
  config.rules[0].capacity = 0
  writeAtomically(stack.configFile, JSON.stringify(config))
  assert.ok(await waitUntil(() => stack.reloader.failures === 1), 'the invalid file was refused')
  assert.match(stack.reloader.last.error, /rules\[0\]\.capacity/)
  assert.deepEqual(await statuses(url, free, 5), [200, 200, 200, 200, 429])

  // A file that does not parse: the same.
  writeAtomically(stack.configFile, '{"rules": [')
  assert.ok(await waitUntil(() => stack.reloader.failures === 2), 'the broken file was refused')
  assert.equal((await request(url, { token: free })).status, 429)

  const data = (await request(`${stack.url}/dashboard/data`)).json
  assert.equal(data.config.file, stack.configFile)
  assert.equal(data.config.reloads, 1)
  assert.equal(data.config.failures, 2)
  assert.equal(data.config.last.trigger, 'file change')
  assert.match(data.config.last.error, /json|JSON|EOF|expected/)
})

test('requests in flight across reloads neither fail nor over-admit', async (t) => {
  const lines = []
  const log = { log: (line) => lines.push(line), warn: (line) => lines.push(line) }
  const stack = await startStack({ limits: { ...LIMITS, free: { capacity: 40, refill_rate: 0.01 } }, configDir: temporaryDir(t), log })
  t.after(() => stack.close())
  stack.reloader.unwatch() // reloaded by hand below, between the requests
  const free = stack.token('alice', 'free')
  const premium = stack.token('bob', 'premium')
  const url = `${stack.url}/api/catalog`

  // Two configurations that differ only in the global limit: `per-user` keeps its count.
  const configs = [20000, 20001].map((limit) => ({ limits: { ...LIMITS, free: { capacity: 40, refill_rate: 0.01 }, global: { limit, window: '1s' } } }))
  let reloads = 0
  let stop = false
  const reloading = (async () => {
    for (let i = 0; i < 200 && !stop; i++) {
      stack.writeConfig(configs[i % 2])
      const outcome = stack.reloader.reload('test')
      assert.equal(outcome.error, undefined, outcome.error)
      assert.equal(outcome.summary.rules[0].change, 'unchanged')
      reloads++
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  // 80 free requests (40 may pass) and 80 premium ones (all may), 8 at a time.
  const all = []
  for (let batch = 0; batch < 20; batch++) {
    const wave = []
    for (let i = 0; i < 4; i++) {
      wave.push(request(url, { token: free }).then((r) => ({ who: 'free', status: r.status })))
      wave.push(request(url, { token: premium }).then((r) => ({ who: 'premium', status: r.status })))
    }
    all.push(...await Promise.all(wave))
  }
  stop = true
  await reloading
  assert.ok(reloads >= 2, `${reloads} reloads happened while requests flowed`)
  assert.equal(lines.length, reloads, 'each reload said what it changed')
  // The first puts the global limit in force as it was; the second changes it.
  assert.match(lines[0], /on test: rules per-user unchanged, order-writes unchanged, global unchanged; upstreams kept 4/)
  assert.match(lines[1], /on test: rules per-user unchanged, order-writes unchanged, global restarted; upstreams kept 4/)
  const count = (who, status) => all.filter((r) => r.who === who && r.status === status).length
  assert.equal(count('premium', 200), 80, 'every premium request was served')
  assert.equal(count('free', 200), 40, 'exactly the free caller\'s 40 were admitted')
  assert.equal(count('free', 429), 40)
})

/** Starts `node gateway.js` with `env`; resolves once it printed its banner. */
async function spawnGateway (t, env) {
  const { freePort } = redisHarness()
  const ports = new Set()
  while (ports.size < 5) ports.add(await freePort())
  const [gatewayPort, ...upstreamPorts] = [...ports]
  const child = spawn(process.execPath, [path.join(EXAMPLE, 'gateway.js')], {
    cwd: EXAMPLE,
    env: { ...process.env, JWT_SECRET: '', REDIS_URL: '', GATEWAY_CONFIG: '', GATEWAY_PORT: String(gatewayPort), UPSTREAM_PORTS: upstreamPorts.join(','), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  child.stderr.on('data', (chunk) => { out += chunk })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.after(async () => {
    child.kill('SIGTERM')
    await exited
  })
  const seen = async (text, after = 0) => {
    const ok = await waitUntil(() => out.indexOf(text, after) >= 0 || child.exitCode !== null, { attempts: CHILD_BOUND_MS / 20 })
    assert.ok(ok && out.indexOf(text, after) >= 0, `the gateway printed ${JSON.stringify(text)}; it printed:\n${out}`)
    return out.indexOf(text, after) + text.length
  }
  await seen('floodwall express gateway on')
  return { child, seen, url: `http://127.0.0.1:${gatewayPort}`, output: () => out }
}

test('the gateway process reloads its file on SIGHUP and when it changes, and says what changed', async (t) => {
  const dir = temporaryDir(t)
  const file = path.join(dir, 'gateway.json')
  const printed = execFileSync(process.execPath, [path.join(EXAMPLE, 'gateway.js'), '--print-config'], {
    cwd: EXAMPLE, encoding: 'utf8', env: { ...process.env, GATEWAY_CONFIG: '' }
  })
  const config = JSON.parse(printed)
  Engine.fromObject(config) // what --print-config prints is a configuration the engine takes
  fs.writeFileSync(file, printed)

  const gateway = await spawnGateway(t, { GATEWAY_CONFIG: file })
  let at = await gateway.seen(`config:      ${file}, reloaded on SIGHUP and when it changes`)
  assert.equal((await request(`${gateway.url}/health`)).status, 200)

  gateway.child.kill('SIGHUP')
  at = await gateway.seen(`gateway: reloaded ${file} on SIGHUP: rules per-user unchanged, order-writes unchanged, global unchanged; upstreams kept 4, started 0, removed 0; auth unchanged`, at)

  config.rules[2].limit += 1
  writeAtomically(file, JSON.stringify(config))
  at = await gateway.seen(`gateway: reloaded ${file} on file change: rules per-user unchanged, order-writes unchanged, global restarted;`, at)

  config.store = { kind: 'redis', url: 'redis://127.0.0.1:1' }
  writeAtomically(file, JSON.stringify(config))
  at = await gateway.seen(`gateway: reload of ${file} on file change refused, the configuration in force stays:`, at)
  assert.match(gateway.output().slice(at), /store/)
  assert.equal(gateway.child.exitCode, null, 'the gateway still runs')
  const missing = await request(`${gateway.url}/api/orders`)
  assert.equal(missing.status, 401, 'and still answers')
})

test('SIGHUP to a gateway configured from the environment says there is nothing to reload', async (t) => {
  const gateway = await spawnGateway(t, {})
  await gateway.seen('config:      from the environment')
  gateway.child.kill('SIGHUP')
  await gateway.seen('gateway: SIGHUP: nothing to reload, the configuration comes from the environment (set GATEWAY_CONFIG to a file to reload it live)')
  assert.equal(gateway.child.exitCode, null)
})

test('GATEWAY_CONFIG naming no file stops the gateway with a message that says so', () => {
  let failure = null
  try {
    execFileSync(process.execPath, [path.join(EXAMPLE, 'gateway.js')], {
      cwd: EXAMPLE, encoding: 'utf8', stdio: 'pipe', env: { ...process.env, GATEWAY_CONFIG: '/nonexistent/gateway.toml' }
    })
  } catch (error) {
    failure = error
  }
  assert.ok(failure !== null, 'the gateway did not start')
  assert.equal(failure.status, 2)
  assert.match(failure.stderr, /^gateway: GATEWAY_CONFIG must name an engine configuration file .* "\/nonexistent\/gateway.toml" is not there/)
})
