'use strict'
/**
 * `make flood` (`node flood.js`): floods a running gateway as the free caller and then as the
 * premium caller, each until it is limited, and prints what came of it — what a spike looks
 * like from the client's side, while the dashboard shows it from the gateway's.
 *
 * - Each caller's flood is `--connections` keep-alive connections (default 32) sending
 *   `GET --path` (default `/api/catalog`) back to back with the caller's token, minted with
 *   the gateway's secret (`JWT_SECRET`, or the demo's). It ends `--linger-ms` (default 1000)
 *   after the caller's first 429 — long enough for the `per-user` rule to block a caller
 *   that keeps on (50 denials) — or after `--max-seconds` (default 10) or `--max-requests`
 *   (default 200000), whichever comes first. Only 127.0.0.1 and the given `--url` are called.
 * - The gateway is `--url`, by default `http://GATEWAY_HOST:GATEWAY_PORT` from the same
 *   environment `make demo` reads (lib/settings.js).
 * - It prints, per caller: requests sent, admitted (200), limited (429, and how many of those
 *   said the caller is blocked), any other answers, the rate it reached, and when the first
 *   429 came. It exits with status 1 if the gateway cannot be
 *   reached or a caller's token is refused (401), so a wrong secret shows at once.
 */

const http = require('node:http')

const { startup, SettingsError } = require('./lib/settings.js')
const { mintToken, CALLERS } = require('./lib/tokens.js')

const USAGE = 'usage: node flood.js [--url URL] [--path PATH] [--connections N] [--linger-ms MS] [--max-seconds S] [--max-requests N]'
/** How long one request may take before the flood gives up on the gateway. */
const REQUEST_TIMEOUT_MS = 10_000

function parseArgs (argv) {
  const options = { url: null, path: '/api/catalog', connections: 32, lingerMs: 1000, maxSeconds: 10, maxRequests: 200_000 }
  const number = (name, text, min, max) => {
    const value = Number(text)
    if (!/^\d+$/.test(String(text)) || value < min || value > max) {
      throw new SettingsError(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}\n${USAGE}`)
    }
    return value
  }
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]
    const value = argv[i + 1]
    if (value === undefined) throw new SettingsError(`${name} needs a value\n${USAGE}`)
    i++
    switch (name) {
      case '--url': {
        let parsed = null
        try { parsed = new URL(value) } catch {}
        if (parsed === null || parsed.protocol !== 'http:') throw new SettingsError(`--url must be an http:// URL such as http://127.0.0.1:8080, not ${JSON.stringify(value)}`)
        options.url = value.replace(/\/+$/, '')
        break
      }
      case '--path':
        if (!value.startsWith('/')) throw new SettingsError(`--path must start with /, not ${JSON.stringify(value)}`)
        options.path = value
        break
      case '--connections': options.connections = number(name, value, 1, 1024); break
      case '--linger-ms': options.lingerMs = number(name, value, 0, 60_000); break
      case '--max-seconds': options.maxSeconds = number(name, value, 1, 300); break
      case '--max-requests': options.maxRequests = number(name, value, 1, 10_000_000); break
      default: throw new SettingsError(`unknown argument ${JSON.stringify(name)}\n${USAGE}`)
    }
  }
  return options
}

/** One GET of `url` on `agent`: resolves with `{ status, blocked }` (`blocked` from a 429's body). */
function get (agent, url, token) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: { Authorization: `Bearer ${token}` }, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks = []
      res.on('data', (chunk) => { if (res.statusCode === 429) chunks.push(chunk) })
      res.on('end', () => {
        let blocked = false
        if (res.statusCode === 429) {
          try { blocked = JSON.parse(Buffer.concat(chunks).toString('utf8')).blocked === true } catch {}
        }
        resolve({ status: res.statusCode, blocked })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${REQUEST_TIMEOUT_MS / 1000} s`)))
    req.on('error', reject)
  })
}

/** Floods `url` with `token` as `options` say; resolves with the counts. */
async function flood (url, token, options) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.connections })
  const counts = { sent: 0, admitted: 0, limited: 0, blocked: 0, other: new Map(), firstLimitMs: null, ms: 0 }
  const start = performance.now()
  const done = () => {
    const elapsed = performance.now() - start
    return counts.sent >= options.maxRequests ||
      elapsed >= options.maxSeconds * 1000 ||
      (counts.firstLimitMs !== null && elapsed - counts.firstLimitMs >= options.lingerMs)
  }
  const worker = async () => {
    while (!done()) {
      counts.sent++
      const { status, blocked } = await get(agent, url, token)
      if (status === 200) {
        counts.admitted++
      } else if (status === 429) {
        counts.limited++
        if (blocked) counts.blocked++
        if (counts.firstLimitMs === null) counts.firstLimitMs = performance.now() - start
      } else {
        counts.other.set(status, (counts.other.get(status) || 0) + 1)
        if (status === 401) throw new Error(`the gateway refused the token (401): is JWT_SECRET the gateway's?`)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: options.connections }, worker))
  } finally {
    agent.destroy()
  }
  counts.ms = performance.now() - start
  return counts
}

const grouped = (n) => n.toLocaleString('en-US')

/** The report line of one caller's flood. */
function reportLine (label, c, options) {
  const rate = c.sent / (c.ms / 1000)
  const other = [...c.other].map(([status, n]) => `${grouped(n)} × ${status}`).join(', ')
  const parts = [
    `${grouped(c.sent)} sent in ${(c.ms / 1000).toFixed(1)} s (${grouped(Math.round(rate))}/s)`,
    `${grouped(c.admitted)} admitted`,
    `${grouped(c.limited)} limited (429)${c.blocked > 0 ? `, ${grouped(c.blocked)} of them blocked` : ''}`
  ]
  if (other) parts.push(other)
  const first = c.firstLimitMs === null
    ? `not limited within ${options.maxSeconds} s — its refill outpaced ${grouped(Math.round(rate))} requests a second`
    : `limited ${(c.firstLimitMs / 1000).toFixed(2)} s in (the first 429)`
  return `  ${label.padEnd(16)} ${parts.join('; ')}\n  ${''.padEnd(16)} ${first}`
}

async function main () {
  const { settings, options } = startup('flood', parseArgs)
  const base = options.url || `http://${settings.host}:${settings.gatewayPort}`
  const url = base + options.path
  console.log(`flood: GET ${url}, ${options.connections} connections per caller, each until ${options.lingerMs} ms after its first 429 (at most ${options.maxSeconds} s)`)
  let failed = false
  for (const role of ['free', 'premium']) {
    const caller = CALLERS[role]
    const token = mintToken(settings.secret, caller)
    try {
      const counts = await flood(url, token, options)
      console.log(reportLine(`${caller.subject} (${role})`, counts, options))
      if (counts.firstLimitMs === null) failed = true
    } catch (error) {
      const unreachable = error.code === 'ECONNREFUSED' || error.code === 'ECONNRESET'
      console.error(unreachable
        ? `flood: no gateway answers at ${base} (${error.message}): start one with make demo, or name it with --url`
        : `flood: ${error.message}`)
      process.exitCode = 1
      return
    }
  }
  console.log(`Dashboard: ${base}/dashboard shows it: traffic per minute, breaches by caller and role, blocked callers`)
  if (failed) console.log('flood: a caller was not limited; raise --connections, or run it where the gateway has more cores')
}

main()
