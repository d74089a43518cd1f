'use strict'
/**
 * `make load`: drives the gateway with autocannon for a bounded time and prints what it
 * sustained — measured against Express alone (docs/PERFORMANCE.md records a run).
 *
 * - It uses the gateway on 127.0.0.1:GATEWAY_PORT (lib/settings.js; 8080 by default) when one
 *   answers there (a `make demo` already running), and otherwise starts the demo (demo.js:
 *   the upstreams and the gateway) for the run and stops it afterwards. Tokens are signed
 *   with the same secret (JWT_SECRET, else the demo's); a gateway that refuses them stops the
 *   run with a message.
 * - Three callers run at once, each an autocannon instance on its own connections, every
 *   request a GET spread over /api/orders/:id and /api/catalog/:sku:
 *     free      50 subjects on 10 connections, paced to 400 req/s in all (8 a second each,
 *               under their limit of 10 a second)
 *     premium   10 subjects on 20 connections, as fast as the gateway answers
 *     abusive   one free subject on 10 connections, as fast as the gateway answers
 * - The table: per caller and in all, requests, throughput, latency p50/p90/p99/max (every
 *   response, whatever its status, as seen by the client; the paced caller's latencies are
 *   not corrected for coordinated omission), and how many were admitted (2xx), limited (429)
 *   or neither (other statuses, connection errors, timeouts).
 *
 * - The peers, measured in the same run right after it (5 s each, 40 connections, as fast as
 *   they answer): Express alone (the gateway's `/health`: no floodwall, no proxy) and one
 *   sample upstream directly (plain node:http). They show what this machine allows an Express
 *   server and a proxy hop before floodwall does anything.
 * - When it started the demo, the CPU each process used during the run (from /proc), to see
 *   where the machine's cores went: the gateway, the upstreams, this load generator; and the
 *   gateway's own account of the run (its engine's report: decisions, and the latency of its
 *   responses as the gateway measured them).
 *
 * Options: `--duration S` (1 to 120, default 10), `--cpu-prof` (when it starts the demo: the
 * gateway runs under `node --cpu-prof`, and the run ends with where its CPU time went; the
 * profile is kept in target/artifacts/profiles/; the peers are left out so that the profile
 * covers the mixed run alone).
 *
 * Everything is bounded: the duration, the connections (40), the wait for the demo to start
 * and to stop, the latencies kept (MAX_SAMPLES). Traffic goes to 127.0.0.1 only.
 */

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const autocannon = require('autocannon')

const { startup, SettingsError } = require('./lib/settings.js')
const { mintToken, CALLERS } = require('./lib/tokens.js')

const HOST = '127.0.0.1'
const REPO = path.resolve(__dirname, '..', '..')
const PROFILE_DIR = path.join(REPO, 'target', 'artifacts', 'profiles')
const START_BOUND_MS = 30_000
const STOP_BOUND_MS = 10_000
/** The most latencies kept per caller (beyond: counted, not kept). */
const MAX_SAMPLES = 5_000_000
/** How long each peer runs, and on how many connections. */
const PEER_SECONDS = 5
const PEER_CONNECTIONS = 40
/** The claim checked: at least this throughput with at most this p99. */
const CLAIM = { requestsPerSecond: 10_000, p99Ms: 15 }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** GET `url` once (fresh connection, bounded): `{ status, text }`, or null when nothing answers. */
function probe (url, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get(url, { headers, agent: false, timeout: 2000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { text += chunk })
      res.on('end', () => resolve({ status: res.statusCode, text }))
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(null))
  })
}

/** Whether `res` (a probe's answer) comes from this gateway. */
function isGateway (res) {
  if (res === null || res.status !== 200) return false
  try {
    return JSON.parse(res.text).service === 'floodwall-express-gateway'
  } catch {
    return false
  }
}

/** Starts `node demo.js` (with `--cpu-prof` when asked) and waits until the gateway answers. */
async function startDemo (gatewayUrl, cpuProf) {
  const args = [path.join(__dirname, 'demo.js')]
  if (cpuProf) args.push('--cpu-prof', PROFILE_DIR)
  fs.mkdirSync(path.join(REPO, 'target', 'artifacts'), { recursive: true })
  const logPath = path.join(REPO, 'target', 'artifacts', 'load-demo.log')
  const log = fs.openSync(logPath, 'w')
  const child = spawn(process.execPath, args, { cwd: __dirname, stdio: ['ignore', log, log] })
  fs.closeSync(log)
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const state = { exited: false }
  exited.then(() => { state.exited = true })
  for (let waited = 0; waited < START_BOUND_MS && !state.exited; waited += 100) {
    if (isGateway(await probe(`${gatewayUrl}/health`))) return { child, exited, logPath }
    await sleep(100)
  }
  if (!state.exited) child.kill('SIGTERM')
  throw new Error(`the demo did not start (see ${path.relative(process.cwd(), logPath)})`)
}

async function stopDemo (demo) {
  demo.child.kill('SIGTERM')
  const bound = sleep(STOP_BOUND_MS).then(() => 'timeout')
  if (await Promise.race([demo.exited, bound]) === 'timeout') {
    demo.child.kill('SIGKILL')
    await demo.exited
  }
}

/** The callers: autocannon options and the tokens they use. */
function callers (secret) {
  const paths = ['/api/orders/1', '/api/catalog/esp-100', '/api/orders/2', '/api/catalog/bean-1k', '/api/orders/3', '/api/catalog/froth-2']
  const requestsFor = (tokens) => {
    // Each connection cycles through these: every subject on every path in turn.
    const list = []
    for (let i = 0; i < Math.max(tokens.length, paths.length); i++) {
      list.push({ method: 'GET', path: paths[i % paths.length], headers: { authorization: `Bearer ${tokens[i % tokens.length]}` } })
    }
    return list
  }
  const subjects = (prefix, n, role) => Array.from({ length: n }, (_, i) => mintToken(secret, { subject: `${prefix}-${i + 1}`, role }))
  return [
    { role: 'free', connections: 10, overallRate: 400, requests: requestsFor(subjects('free', 50, 'free')) },
    { role: 'premium', connections: 20, overallRate: 0, requests: requestsFor(subjects('premium', 10, 'premium')) },
    { role: 'abusive', connections: 10, overallRate: 0, requests: requestsFor([mintToken(secret, CALLERS.abusive)]) }
  ]
}

/** Latency percentiles (ms) of `samples` (a Float64Array, sorted in place). */
function percentiles (samples) {
  samples.sort()
  const at = (q) => (samples.length === 0 ? NaN : samples[Math.min(samples.length - 1, Math.ceil(q * samples.length) - 1)])
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: samples.length === 0 ? NaN : samples[samples.length - 1] }
}

/** Runs one caller for `duration` seconds; resolves with its counts and latencies. */
function runCaller (url, caller, duration) {
  const samples = new Float64Array(MAX_SAMPLES)
  let kept = 0
  let dropped = 0
  return new Promise((resolve, reject) => {
    const instance = autocannon({
      url,
      connections: caller.connections,
      overallRate: caller.overallRate || undefined,
      duration,
      requests: caller.requests,
      timeout: 10
    }, (error, result) => {
      if (error) reject(error)
      else resolve({ caller, result, samples: samples.subarray(0, kept), dropped })
    })
    instance.on('response', (client, statusCode, bytes, responseTime) => {
      if (kept < MAX_SAMPLES) samples[kept++] = responseTime
      else dropped++
    })
  })
}

/** One row of the table for `runs` (one caller's, or all together). */
function summarize (label, runs, seconds) {
  let requests = 0
  let admitted = 0
  let limited = 0
  let errors = 0
  let total = 0
  for (const { samples } of runs) total += samples.length
  const all = new Float64Array(total)
  let offset = 0
  for (const { result, samples } of runs) {
    all.set(samples, offset)
    offset += samples.length
    for (const [status, { count }] of Object.entries(result.statusCodeStats)) {
      requests += count
      if (status >= 200 && status < 300) admitted += count
      else if (Number(status) === 429) limited += count
    }
    errors += result.errors + result.timeouts
  }
  const other = requests - admitted - limited + errors
  return { label, connections: runs.reduce((n, r) => n + r.caller.connections, 0), requests, rate: requests / seconds, ...percentiles(all), admitted, limited, other }
}

function printTable (rows, { peers = false } = {}) {
  const ms = (v) => (Number.isNaN(v) ? '-' : v.toFixed(2))
  let columns = [
    ['caller', (r) => r.label, 'left'],
    ['conns', (r) => String(r.connections)],
    ['requests', (r) => r.requests.toLocaleString('en-US')],
    ['req/s', (r) => Math.round(r.rate).toLocaleString('en-US')],
    ['p50 ms', (r) => ms(r.p50)],
    ['p90 ms', (r) => ms(r.p90)],
    ['p99 ms', (r) => ms(r.p99)],
    ['max ms', (r) => ms(r.max)],
    ['admitted', (r) => r.admitted.toLocaleString('en-US')],
    ['limited', (r) => r.limited.toLocaleString('en-US')],
    ['other', (r) => r.other.toLocaleString('en-US')]
  ]
  if (peers) columns = columns.filter(([title]) => title !== 'admitted' && title !== 'limited')
  const cells = rows.map((row) => columns.map(([, get]) => get(row)))
  const widths = columns.map(([title], i) => Math.max(title.length, ...cells.map((c) => c[i].length)))
  const line = (values) => values.map((v, i) => (columns[i][2] === 'left' ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ')
  console.log(line(columns.map(([title]) => title)))
  console.log(widths.map((w) => '-'.repeat(w)).join('  '))
  cells.forEach((c, i) => {
    if (!peers && i === cells.length - 1) console.log(widths.map((w) => '-'.repeat(w)).join('  '))
    console.log(line(c))
  })
}

/**
 * Where the gateway's CPU time went, from a V8 `.cpuprofile`: self time by area (the engine,
 * the proxy and middleware, Express, node's HTTP, garbage collection, idle) and the functions
 * that took the most.
 */
function summarizeProfile (file) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'))
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map()
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i + 1] !== undefined ? profile.timeDeltas[i + 1] : 0
    self.set(profile.samples[i], (self.get(profile.samples[i]) || 0) + delta)
  }
  const area = (frame) => {
    const url = frame.url
    if (frame.functionName === '(idle)') return 'idle'
    if (frame.functionName === '(garbage collector)') return 'garbage collection'
    if (frame.functionName === '(program)') return 'V8/native (program)'
    if (url.includes('bindings-node/index.js') || url.includes('bindings-node/native.js')) return 'floodwall engine (addon calls)'
    if (url.includes('bindings-node/express.js')) return 'floodwall/express (guard, proxy)'
    if (/node_modules\/(express|router|finalhandler|send|serve-static|body-parser|qs|path-to-regexp|debug|on-finished|parseurl)\//.test(url)) return 'express + router'
    if (url.startsWith('node:')) return 'node core (http, net, streams)'
    if (url.includes('express-gateway/')) return 'gateway code'
    return url === '' ? 'native / builtins' : 'other'
  }
  const areas = new Map()
  const functions = new Map()
  let total = 0
  for (const [id, time] of self) {
    const node = byId.get(id)
    const frame = node.callFrame
    total += time
    const a = area(frame)
    areas.set(a, (areas.get(a) || 0) + time)
    const name = `${frame.functionName || '(anonymous)'}  ${frame.url ? `${frame.url.replace(/^.*\/(node_modules\/|bindings-node\/|express-gateway\/)/, '$1')}:${frame.lineNumber + 1}` : ''}`
    functions.set(name, (functions.get(name) || 0) + time)
  }
  const pct = (t) => `${((100 * t) / total).toFixed(1).padStart(5)} %`
  console.log(`\nGateway CPU profile (${(total / 1e6).toFixed(1)} s sampled; ${path.relative(process.cwd(), file)}):`)
  for (const [name, time] of [...areas].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(time)}  ${name}`)
  console.log('  top functions by self time:')
  for (const [name, time] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`    ${pct(time)}  ${name}`)
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100

/** `rootPid` and its descendants: `[{ pid, label }]`, from /proc (empty where there is none). */
function processTree (rootPid) {
  const parents = new Map()
  let entries = []
  try { entries = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name)) } catch {}
  for (const name of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8')
      parents.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {} // gone meanwhile
  }
  const tree = [rootPid]
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parents) if (ppid === tree[i]) tree.push(pid)
  }
  return tree.map((pid) => {
    let label = `pid ${pid}`
    try {
      const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      const script = args.find((a) => a.endsWith('.js'))
      if (script !== undefined) label = path.basename(script, '.js') + (script.endsWith('upstream.js') ? ` ${args[args.indexOf(script) + 2]}` : '')
    } catch {}
    return { pid, label }
  })
}

/** User + system CPU seconds used so far by `pid` (null when it is gone). */
function cpuSeconds (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
  } catch {
    return null
  }
}

/** Prints the CPU each process used between `before` and now, as a share of one core. */
function printCpu (processes, before, seconds) {
  const used = processes.map((p, i) => ({ ...p, share: (cpuSeconds(p.pid) - before[i]) / seconds }))
    .filter((p) => p.label !== 'demo' && Number.isFinite(p.share))
  const upstreams = used.filter((p) => p.label.startsWith('upstream'))
  const gateway = used.find((p) => p.label === 'gateway')
  const self = used.find((p) => p.pid === process.pid)
  const pct = (share) => `${Math.round(share * 100)} %`
  const sum = used.reduce((n, p) => n + p.share, 0)
  console.log(`\nCPU during the run (100 % = one core; this machine has ${os.availableParallelism()}):`)
  if (gateway) console.log(`  gateway           ${pct(gateway.share)}`)
  console.log(`  upstreams         ${pct(upstreams.reduce((n, p) => n + p.share, 0))}  (${upstreams.map((p) => `${p.label.replace('upstream ', '')} ${pct(p.share)}`).join(', ')})`)
  if (self) console.log(`  load generator    ${pct(self.share)}`)
  console.log(`  all               ${pct(sum)}`)
}

/**
 * The gateway's own account (its engine's report, via /dashboard/data): what it decided, and
 * the latency of its responses from the request's arrival in Express to their last byte
 * written — beside the client's, the difference is time spent queued in sockets and in the
 * event loop before the gateway saw the request.
 */
async function printGatewayView (url, fresh) {
  const res = await probe(`${url}/dashboard/data`)
  if (res === null || res.status !== 200) throw new Error(`${url}/dashboard/data answered ${res === null ? 'nothing' : res.status}`)
  const t = JSON.parse(res.text).report.totals
  const ms = (us) => (us / 1000).toFixed(2)
  console.log(`\nThe gateway's own account (engine.report totals${fresh ? '' : ', since it started'}): ` +
    `${t.requests.toLocaleString('en-US')} decisions, ${t.admitted.toLocaleString('en-US')} admitted, ${t.rate_limited.toLocaleString('en-US')} rate-limited, ` +
    `${t.upstream_failures.toLocaleString('en-US')} upstream failures; response latency inside the gateway p50 ${ms(t.latency_p50_us)} ms, ` +
    `p99 ${ms(t.latency_p99_us)} ms, max ${ms(t.max_latency_us)} ms`)
}

/** The peers, measured with the same client: rows like the callers' (no admitted/limited). */
async function runPeers (url, settings) {
  const peers = [
    { role: 'peer: Express alone (gateway /health)', url: `${url}/health` },
    { role: `peer: one upstream directly (${settings.upstreams[0].name})`, url: `http://${HOST}:${settings.upstreams[0].port}/api/orders/1` }
  ]
  const rows = []
  for (const peer of peers) {
    const started = process.hrtime.bigint()
    const run = await runCaller(peer.url, { role: peer.role, connections: PEER_CONNECTIONS, overallRate: 0, requests: [{ method: 'GET' }] }, PEER_SECONDS)
    rows.push(summarize(peer.role, [run], Math.max(PEER_SECONDS, Number(process.hrtime.bigint() - started) / 1e9)))
  }
  return rows
}

function parseArgs (argv) {
  const options = { duration: 10, cpuProf: false }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--duration' && i + 1 < argv.length) {
      options.duration = Number(argv[++i])
      if (!Number.isInteger(options.duration) || options.duration < 1 || options.duration > 120) {
        throw new SettingsError('--duration must be a whole number of seconds from 1 to 120')
      }
    } else if (argv[i] === '--cpu-prof') options.cpuProf = true
    else throw new SettingsError(`unknown argument ${JSON.stringify(argv[i])}\nusage: node load.js [--duration S] [--cpu-prof]`)
  }
  return options
}

async function main () {
  const { settings, options } = startup('load', parseArgs)
  const url = `http://${HOST}:${settings.gatewayPort}`
  let demo = null
  const health = await probe(`${url}/health`)
  if (isGateway(health)) {
    console.log(`load: using the gateway already running at ${url}`)
    if (options.cpuProf) console.log('load: --cpu-prof needs a gateway this script starts; not profiling')
    options.cpuProf = false
  } else if (health !== null) {
    console.error(`load: something other than the gateway answers at ${url}; set GATEWAY_PORT to a free port`)
    process.exit(1)
  } else {
    if (options.cpuProf) fs.rmSync(PROFILE_DIR, { recursive: true, force: true })
    console.log(`load: starting the demo at ${url}`)
    demo = await startDemo(url, options.cpuProf)
  }

  let exitCode = 0
  try {
    const check = await probe(`${url}/api/orders/1`, { authorization: `Bearer ${mintToken(settings.secret, { subject: 'load-check', role: 'premium' })}` })
    if (check === null || check.status === 401) {
      throw new Error(`the gateway at ${url} refuses this script's tokens (${check === null ? 'no answer' : '401'}): run it with the same JWT_SECRET`)
    }
    const plan = callers(settings.secret)
    console.log(`load: ${options.duration} s, ${plan.map((c) => `${c.role} ${c.connections} connections${c.overallRate ? ` at ${c.overallRate} req/s` : ''}`).join(', ')}`)
    // Other work on the machine takes cores from the gateway: say so beside the numbers.
    const cores = os.availableParallelism()
    const [load1] = os.loadavg()
    console.log(`load: this machine has ${cores} cores; load average ${load1.toFixed(2)} before the run${load1 > cores / 2 ? ' (other processes are busy: expect lower numbers)' : ''}\n`)
    const processes = demo === null ? [{ pid: process.pid, label: 'load' }] : [...processTree(demo.child.pid), { pid: process.pid, label: 'load' }]
    const cpuBefore = processes.map((p) => cpuSeconds(p.pid))
    const started = process.hrtime.bigint()
    const runs = await Promise.all(plan.map((caller) => runCaller(url, caller, options.duration)))
    const seconds = Math.max(options.duration, Number(process.hrtime.bigint() - started) / 1e9)
    const rows = runs.map((run) => summarize(run.caller.role, [run], seconds))
    const total = summarize('all', runs, seconds)
    printTable([...rows, total])
    if (demo !== null) printCpu(processes, cpuBefore, seconds)
    await printGatewayView(url, demo !== null)
    const dropped = runs.reduce((n, r) => n + r.dropped, 0)
    if (dropped > 0) console.log(`(${dropped} latencies beyond the ${MAX_SAMPLES} kept per caller are not in the percentiles)`)
    const met = total.rate >= CLAIM.requestsPerSecond && total.p99 <= CLAIM.p99Ms
    console.log(`\nclaim "${CLAIM.requestsPerSecond.toLocaleString('en-US')} requests per second at ${CLAIM.p99Ms} ms" (p99): ` +
      `measured ${Math.round(total.rate).toLocaleString('en-US')} req/s at p99 ${total.p99.toFixed(2)} ms — ${met ? 'met' : 'NOT met'} on this machine`)

    if (options.cpuProf) {
      console.log('\n(the peers are not measured with --cpu-prof: the profile covers the mixed run alone)')
    } else {
      console.log(`\nPeers, same client, ${PEER_SECONDS} s each (what this machine allows without floodwall):\n`)
      printTable(await runPeers(url, settings), { peers: true })
    }
  } catch (error) {
    console.error(`load: ${error.message}`)
    exitCode = 1
  } finally {
    if (demo !== null) await stopDemo(demo)
  }
  if (options.cpuProf && demo !== null) {
    const profiles = fs.existsSync(PROFILE_DIR) ? fs.readdirSync(PROFILE_DIR).filter((f) => f.endsWith('.cpuprofile')) : []
    if (profiles.length === 0) console.error('load: the gateway left no CPU profile')
    else summarizeProfile(path.join(PROFILE_DIR, profiles.sort().at(-1)))
  }
  process.exit(exitCode)
}

main()
