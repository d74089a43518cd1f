'use strict'
/**
 * `make flood` (flood.js) against a gateway of the test's own (memory store, 127.0.0.1): the
 * free caller and the premium caller are each flooded until limited, the free one keeps on
 * until `per-user` blocks it, and the report says so; a token the gateway refuses and a bad
 * argument stop it with a message. The premium limit is lowered so that a slow machine still
 * outpaces its refill; every flood is bounded in time and count.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')

const { startStack, request, EXAMPLE } = require('./helpers.js')

/** The demo's free limits; premium a burst of 40, then 20 a second. */
const LIMITS = { premium: { capacity: 40, refill_rate: 20 } }
/** A bound on one run of flood.js (not an assertion). */
const RUN_BOUND_MS = 40_000

/** Runs flood.js with `args` and `env` (on top of an environment without the gateway's settings). */
function runFlood (args, env = {}) {
  const base = { ...process.env }
  for (const name of ['GATEWAY_HOST', 'GATEWAY_PORT', 'UPSTREAM_PORTS', 'REDIS_URL', 'JWT_SECRET', 'GATEWAY_CONFIG']) delete base[name]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(EXAMPLE, 'flood.js'), ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_BOUND_MS)
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

test('flood limits the free caller, then the premium caller, and the free one is blocked', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())

  const run = await runFlood(['--url', stack.url, '--connections', '8', '--linger-ms', '1000', '--max-seconds', '15', '--max-requests', '20000'])
  assert.equal(run.code, 0, run.stdout + run.stderr)
  const lines = run.stdout.split('\n')
  const after = (label) => {
    const i = lines.findIndex((line) => line.trimStart().startsWith(label))
    assert.ok(i >= 0, `no line for ${label}:\n${run.stdout}`)
    return [lines[i], lines[i + 1]]
  }
  const [freeCounts, freeFirst] = after('alice (free)')
  const [premiumCounts, premiumFirst] = after('bob (premium)')
  // Each was limited, after at least its burst (free 20, premium 40) was admitted.
  const admitted = (line) => Number(/([\d,]+) admitted/.exec(line)[1].replace(/,/g, ''))
  assert.match(freeFirst, /limited [\d.]+ s in \(the first 429\)/)
  assert.match(premiumFirst, /limited [\d.]+ s in \(the first 429\)/)
  assert.ok(admitted(freeCounts) >= 20, freeCounts)
  assert.ok(admitted(premiumCounts) >= 40, premiumCounts)
  assert.match(freeCounts, /limited \(429\), [\d,]+ of them blocked/)
  assert.match(premiumCounts, /[\d,]+ limited \(429\)/)
  assert.match(run.stdout, new RegExp(`Dashboard: ${stack.url}/dashboard`))

  // The gateway agrees: alice is blocked now, and the dashboard lists her — and bob under
  // the premium policy, if he kept on long enough to be blocked too.
  const alice = await stack.engine.inspect('per-user', 'alice')
  assert.ok(alice.blockedForMs !== null && alice.blockedForMs > 0, JSON.stringify(alice))
  const data = (await request(`${stack.url}/dashboard/data`)).json
  assert.ok(data.blocked.some((b) => b.subject === 'alice' && b.role === null), JSON.stringify(data.blocked))
  const bob = await stack.engine.inspect('per-user', 'bob', { role: 'premium' })
  assert.equal(data.blocked.some((b) => b.subject === 'bob' && b.role === 'premium'), bob.blockedForMs !== null, JSON.stringify(data.blocked))
  assert.equal(/of them blocked/.test(premiumCounts), bob.blockedForMs !== null, premiumCounts)
})

test('a token the gateway refuses stops the flood with a message', async (t) => {
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const run = await runFlood(['--url', stack.url, '--connections', '2', '--max-seconds', '5'], { JWT_SECRET: 'another-secret-of-at-least-thirty-two-bytes' })
  assert.equal(run.code, 1, run.stdout + run.stderr)
  assert.match(run.stderr, /refused the token \(401\)/)
})

test('bad arguments are named, and nothing is sent', async () => {
  const run = await runFlood(['--connections', '0'])
  assert.equal(run.code, 2)
  assert.match(run.stderr, /--connections must be an integer from 1 to 1024, not "0"/)
  const url = await runFlood(['--url', 'ftp://x'])
  assert.equal(url.code, 2)
  assert.match(url.stderr, /--url must be an http:\/\/ URL/)
  const nobody = await runFlood(['--url', 'http://127.0.0.1:1', '--connections', '1'])
  assert.equal(nobody.code, 1)
  assert.match(nobody.stderr, /no gateway answers at http:\/\/127\.0\.0\.1:1 .*start one with make demo/)
})
