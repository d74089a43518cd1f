'use strict'
/**
 * Engines over their lifetime: collected once nothing references them (their Redis
 * connections and threads released), pending checks settled whatever happens to their
 * engine, processes that exit with checks in flight (no abort at exit), and engines inside
 * worker threads that are terminated while their checks wait.
 */

const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const v8 = require('node:v8')
const vm = require('node:vm')
const { Worker } = require('node:worker_threads')

const { floodwall, PACKAGE, redisStore, sleep } = require('./helpers.js')
const { RedisServer } = require('./redis_server.js')

const { Engine, Decision } = floodwall

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

const RULES = [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1000, window: '1m' }]

/**
 * Collects garbage until `done()` holds or `rounds` rounds have passed. Each `gc()` runs in a
 * macrotask of its own: a WeakRef read (in `done`) keeps its target alive to the end of the
 * task that read it.
 */
async function collectUntil (done, rounds = 100) {
  for (let i = 0; i < rounds; i++) {
    await sleep(5)
    gc()
    await sleep(5)
    if (done()) return true
  }
  return done()
}

/** Redis's client connections now (this command's own included). */
async function clientCount (server) {
  const list = await server.command('CLIENT', 'LIST')
  return list.trim().split('\n').length
}

/** The OS threads of this process now. */
function threadCount () {
  return fs.readdirSync('/proc/self/task').length
}

/**
 * Runs `code` in a child `node` with `env`; resolves with its exit code, signal and output.
 * The child is killed if it runs past 30 s (a bound, not an assertion).
 */
function runChild (code, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', code], {
      env: { ...process.env, ...env, FLOODWALL_PACKAGE: PACKAGE },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', (error) => { clearTimeout(timer); reject(error) })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout: stdout.trim(), stderr: stderr.trim() })
    })
  })
}

describe('with a redis-server', () => {
  let server
  before(async () => { server = await RedisServer.start() })
  after(async () => { if (server) await server.stop() })

  test('memory engines nothing references are collected (the control)', async () => {
    const refs = []
    for (let i = 0; i < 10; i++) {
      const engine = Engine.fromObject({ rules: RULES })
      engine.checkSync({ subject: 'x' })
      refs.push(new WeakRef(engine))
    }
    const collected = () => refs.filter((r) => r.deref() === undefined).length
    await collectUntil(() => collected() >= 9)
    assert.ok(collected() >= 9, `${collected()} of 10 memory engines collected`)
  })

  test('Redis engines nothing references are collected, their connections closed', async () => {
    const baseline = await clientCount(server)
    const threadsBefore = threadCount()
    const refs = []
    for (let i = 0; i < 10; i++) {
      const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny' }), rules: RULES })
      assert.equal((await engine.check({ subject: 'x' })).store, 'redis')
      refs.push(new WeakRef(engine))
    }
    assert.ok(await clientCount(server) >= baseline + 10, 'each engine opened its connection')
    const collected = () => refs.filter((r) => r.deref() === undefined).length
    await collectUntil(() => collected() >= 9)
    assert.ok(collected() >= 9, `${collected()} of 10 Redis engines collected (threads ${threadsBefore} → ${threadCount()})`)
    let clients = await clientCount(server)
    for (let i = 0; i < 100 && clients > baseline + 1; i++) {
      await sleep(20)
      clients = await clientCount(server)
    }
    assert.ok(clients <= baseline + 1, `${clients - baseline} connections of dropped engines still open`)
  })

  test('a check pending while its engine is dropped still settles', async () => {
    let ref
    const start = async () => {
      const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny', timeout: '3s' }), rules: RULES })
      ref = new WeakRef(engine)
      assert.equal((await engine.check({ subject: 'warm' })).store, 'redis')
      assert.equal(await server.command('CLIENT', 'PAUSE', '600', 'ALL'), 'OK')
      return [engine.check({ subject: 'a' }), engine.checkMany([{ subject: 'b' }])]
    }
    const [single, batch] = await start()
    const out = {}
    single.then((d) => { out.single = d }, (e) => { out.single = e })
    batch.then((d) => { out.batch = d }, (e) => { out.batch = e })
    await collectUntil(() => ref.deref() === undefined, 30)
    for (let i = 0; i < 500 && !('single' in out && 'batch' in out); i++) await sleep(10)
    assert.ok('single' in out, 'the pending check never settled')
    assert.ok('batch' in out, 'the pending checkMany never settled')
    assert.ok(out.single instanceof Decision, String(out.single))
    assert.equal(out.single.store, 'redis')
    assert.ok(out.batch[0] instanceof Decision, String(out.batch[0]))
    assert.equal(out.batch[0].store, 'redis')
  })

  const CHILD = `
    const { Engine } = require(process.env.FLOODWALL_PACKAGE)
    const engine = Engine.fromObject({
      store: { kind: 'redis', url: process.env.REDIS_URL, prefix: process.env.PREFIX, on_error: 'deny', timeout: '3s', connect_timeout: '3s' },
      rules: [{ name: 'per-user', key: 'subject', algorithm: 'fixed_window', limit: 1000, window: '1m' }]
    })
    const mode = process.env.MODE
    if (mode === 'natural') {
      engine.check({ subject: 'a' }).then((d) => console.log('settled ' + d.store))
    } else if (mode === 'exit-pending') {
      engine.check({ subject: 'a' }).then(() => {
        for (let i = 0; i < 64; i++) engine.check({ subject: 'b' + i })
        engine.checkMany([{ subject: 'c' }])
        console.log('exiting')
        process.exit(0)
      })
    } else if (mode === 'many') {
      Promise.all(Array.from({ length: 200 }, (_, i) => engine.check({ subject: 'c' + i })))
        .then((ds) => console.log('settled ' + ds.length + ' ' + ds.every((d) => d.store === 'redis')))
    }
  `

  test('a process waits for its pending check, then exits cleanly', async () => {
    // Paused long enough that the child's check (after its start-up) waits on Redis.
    assert.equal(await server.command('CLIENT', 'PAUSE', '1500', 'ALL'), 'OK')
    const r = await runChild(CHILD, { REDIS_URL: server.url, PREFIX: 'child-natural:', MODE: 'natural' })
    assert.deepEqual([r.code, r.signal, r.stdout], [0, null, 'settled redis'], r.stderr)
  })

  test('a process that exits with checks in flight exits cleanly (no abort)', async () => {
    for (let round = 0; round < 5; round++) {
      const r = await runChild(CHILD, { REDIS_URL: server.url, PREFIX: `child-exit-${round}:`, MODE: 'exit-pending' })
      assert.deepEqual([r.code, r.signal, r.stdout], [0, null, 'exiting'], `round ${round}: ${r.stderr}`)
    }
  })

  test('a process with 200 concurrent checks settles them all and exits cleanly', async () => {
    const r = await runChild(CHILD, { REDIS_URL: server.url, PREFIX: 'child-many:', MODE: 'many' })
    assert.deepEqual([r.code, r.signal, r.stdout], [0, null, 'settled 200 true'], r.stderr)
  })

  test('engines in a worker thread, terminated while its checks wait', async () => {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { Engine } = require(workerData.pkg)
      const memory = Engine.fromObject({ rules: workerData.rules })
      const shared = Engine.fromObject({
        store: { kind: 'redis', url: workerData.url, prefix: workerData.prefix, on_error: 'deny', timeout: '3s' },
        rules: workerData.rules
      })
      shared.check({ subject: 'w' }).then((d) => {
        parentPort.postMessage({ memory: memory.checkSync({ subject: 'a' }).remaining, store: d.store })
        for (let i = 0; i < 64; i++) shared.check({ subject: 'p' + i }).then(() => {}, () => {})
        parentPort.postMessage('pending')
      })
    `
    for (let round = 0; round < 4; round++) {
      const worker = new Worker(code, { eval: true, workerData: { pkg: PACKAGE, url: server.url, prefix: `worker-${round}:`, rules: RULES } })
      const messages = []
      await new Promise((resolve, reject) => {
        worker.on('message', (m) => {
          messages.push(m)
          if (m === 'pending') resolve()
        })
        worker.once('error', reject)
        worker.once('exit', (c) => reject(new Error(`the worker exited (${c}) before its checks were pending`)))
      })
      if (round % 2 === 0) assert.equal(await server.command('CLIENT', 'PAUSE', '300', 'ALL'), 'OK')
      await worker.terminate()
      assert.deepEqual(messages, [{ memory: 999, store: 'redis' }, 'pending'])
    }
    // This process still decides, on both stores.
    assert.equal(Engine.fromObject({ rules: RULES }).checkSync({ subject: 'main' }).remaining, 999)
    const engine = Engine.fromObject({ store: redisStore(server, { on_error: 'deny' }), rules: RULES })
    assert.equal((await engine.check({ subject: 'main' })).store, 'redis')
  })
})
