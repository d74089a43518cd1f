'use strict'
/**
 * The HTTP conformance suite for Node hosts (the Express middleware, the reference gateway):
 * the cases and tokens of this folder, the README's application as an Express handler, a
 * client that writes each request exactly as a case gives it, the checks, and the
 * transcript. `runSuite` runs every case against a server the caller set up; see README.md.
 */

const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')

const HERE = __dirname
const TRANSCRIPTS = path.join(HERE, '..', '..', 'target', 'http-conformance')
/** Every wait of the client, bounded. */
const TIMEOUT_MS = 10_000

function loadCases () {
  return fs.readdirSync(HERE)
    .filter((f) => f.endsWith('.json') && f !== 'tokens.json')
    .sort()
    .map((file) => {
      const doc = JSON.parse(fs.readFileSync(path.join(HERE, file), 'utf8'))
      if (doc.format !== 1) throw new Error(`${file}: format ${doc.format}, not 1`)
      return { file, cases: doc.cases }
    })
}

function loadTokens () {
  return JSON.parse(fs.readFileSync(path.join(HERE, 'tokens.json'), 'utf8'))
}

/** A case's engine configuration: `"auth": "suite"` resolved, `store` added when absent. */
function caseConfig (c, tokens, store) {
  const config = structuredClone(c.config)
  if (config.auth === 'suite') config.auth = tokens.auth
  if (store !== undefined && config.store === undefined) config.store = store
  return config
}

/** The header lines of a step's request: its own, the token, the application's instructions. */
function requestLines (step, tokens) {
  const lines = []
  for (const [name, value] of Object.entries(step.request.headers || {})) {
    for (const line of Array.isArray(value) ? value : [value]) lines.push([name, line])
  }
  if (step.request.token !== undefined) {
    const token = tokens.tokens[step.request.token]
    if (token === undefined) throw new Error(`no token ${step.request.token} in tokens.json`)
    lines.push(['Authorization', `Bearer ${token}`])
  }
  const app = step.app || {}
  if (app.status !== undefined) lines.push(['X-Test-Status', String(app.status)])
  if (app.charge !== undefined) lines.push(['X-Test-Charge', app.charge])
  return lines
}

/** The middleware's cost function: `X-Test-Cost` as a number, 1 without it. */
function cost (req) {
  const value = req.headers['x-test-cost']
  return value === undefined ? 1 : Number(value)
}

/** The README's application, as an Express (or plain node:http) handler. */
function echo (req, res) {
  const state = req.floodwall
  const identity = state !== undefined && state !== null ? state.identity : null
  res.statusCode = req.headers['x-test-status'] !== undefined ? Number(req.headers['x-test-status']) : 200
  res.setHeader('X-Test-Reached', '1')
  res.setHeader('X-Test-Subject', identity ? identity.subject : '-')
  res.setHeader('X-Test-Role', identity && identity.role !== null ? identity.role : '-')
  if (req.headers['x-test-charge'] !== undefined) res.setHeader('X-RateLimit-Cost', req.headers['x-test-charge'])
  res.setHeader('Content-Type', 'text/plain; charset=utf-8')
  res.end('ok')
}

const FLOODWALL_HEADERS = new Set([
  'ratelimit-policy', 'ratelimit', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset',
  'retry-after', 'www-authenticate', 'x-test-reached', 'x-test-subject', 'x-test-role', 'x-ratelimit-cost'
])

/** The headers a transcript keeps, by lower-case name (tests/support/http.rs). */
function transcriptHeaders (pairs) {
  const reached = pairs.some(([n]) => n.toLowerCase() === 'x-test-reached')
  const kept = {}
  for (const [name, value] of pairs) {
    const lower = name.toLowerCase()
    if (FLOODWALL_HEADERS.has(lower) || (!reached && (lower === 'content-type' || lower === 'content-length'))) kept[lower] = value
  }
  return kept
}

/** What is wrong with `observed` against `expect` (tests/support/http.rs `check`). */
function check (expect, observed) {
  const wrong = []
  if (observed.status !== expect.status) wrong.push(`status ${observed.status} (want ${expect.status})`)
  const reached = 'x-test-reached' in observed.headers
  if (reached !== expect.reached) wrong.push(`reached ${reached} (want ${expect.reached})`)
  if (expect.code !== undefined) {
    let code = null
    try {
      code = JSON.parse(observed.body).code
    } catch {}
    if (code !== expect.code) wrong.push(`code ${code} (want ${expect.code})`)
  }
  if (expect.body !== undefined && observed.body !== expect.body) wrong.push(`body ${JSON.stringify(observed.body)} (want ${JSON.stringify(expect.body)})`)
  for (const [name, want] of Object.entries(expect.headers || {})) {
    const got = observed.headers[name.toLowerCase()]
    if ((got === undefined ? null : got) !== want) wrong.push(`header ${name}: ${JSON.stringify(got)} (want ${JSON.stringify(want)})`)
  }
  for (const [name, want] of [['x-test-subject', expect.subject], ['x-test-role', expect.role]]) {
    if (want !== undefined && observed.headers[name] !== want) wrong.push(`${name}: ${JSON.stringify(observed.headers[name])} (want ${JSON.stringify(want)})`)
  }
  return wrong
}

/**
 * A client on one kept-alive connection to 127.0.0.1:`port` that writes requests exactly as
 * given and reads their responses in turn.
 */
async function connect (port) {
  const socket = net.connect(port, '127.0.0.1')
  socket.setNoDelay(true)
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  let buffer = Buffer.alloc(0)
  let waiting = null
  let closed = false
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk])
    if (waiting !== null) waiting()
  })
  socket.on('close', () => {
    closed = true
    if (waiting !== null) waiting()
  })
  socket.on('error', () => {})
  const more = () => new Promise((resolve, reject) => {
    if (closed) {
      reject(new Error('the server closed the connection'))
      return
    }
    const timer = setTimeout(() => reject(new Error(`no response within ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
    waiting = () => {
      clearTimeout(timer)
      waiting = null
      resolve()
    }
  })
  const read = async (head) => {
    let end
    while ((end = buffer.indexOf('\r\n\r\n')) < 0) await more()
    const lines = buffer.subarray(0, end).toString('latin1').split('\r\n')
    buffer = buffer.subarray(end + 4)
    const status = Number(lines[0].split(' ')[1])
    const headers = lines.slice(1).map((line) => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon), line.slice(colon + 1).trim()]
    })
    const header = (name) => {
      const found = headers.find(([n]) => n.toLowerCase() === name)
      return found === undefined ? undefined : found[1]
    }
    let body = Buffer.alloc(0)
    if (!head && status !== 204 && status !== 304 && status >= 200) {
      if ((header('transfer-encoding') || '').toLowerCase() === 'chunked') {
        const parts = []
        for (;;) {
          let eol
          while ((eol = buffer.indexOf('\r\n')) < 0) await more()
          const size = parseInt(buffer.subarray(0, eol).toString('latin1'), 16)
          while (buffer.length < eol + 2 + size + 2) await more()
          parts.push(buffer.subarray(eol + 2, eol + 2 + size))
          buffer = buffer.subarray(eol + 2 + size + 2)
          if (size === 0) break
        }
        body = Buffer.concat(parts)
      } else {
        const length = Number(header('content-length') || 0)
        while (buffer.length < length) await more()
        body = buffer.subarray(0, length)
        buffer = buffer.subarray(length)
      }
    }
    return { status, headers, body: body.toString('utf8') }
  }
  return {
    async send (method, target, lines) {
      let text = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`
      for (const [name, value] of lines) text += `${name}: ${value}\r\n`
      text += 'Content-Length: 0\r\n\r\n'
      socket.write(Buffer.from(text, 'latin1'))
      return read(method.toUpperCase() === 'HEAD')
    },
    close () {
      socket.destroy()
    }
  }
}

/**
 * Runs every case: `setUp(c, config)` makes the server at `port` serve the case with a fresh
 * engine of `config` (a Promise or not); answers the mismatches and writes the transcript as
 * `runner`.
 */
async function runSuite ({ runner, port, setUp, store }) {
  const tokens = loadTokens()
  const transcript = {}
  const wrong = []
  for (const { file, cases } of loadCases()) {
    for (const c of cases) {
      await setUp(c, caseConfig(c, tokens, store))
      const client = await connect(port)
      const seen = []
      try {
        for (const [i, step] of c.steps.entries()) {
          const response = await client.send(step.request.method, step.request.target, requestLines(step, tokens))
          const observed = { status: response.status, headers: transcriptHeaders(response.headers), body: response.body }
          for (const w of check(step.expect, observed)) wrong.push(`${file} ${c.name} step ${i}: ${w}`)
          seen.push(observed)
        }
      } finally {
        client.close()
      }
      transcript[c.name] = seen
    }
  }
  fs.mkdirSync(TRANSCRIPTS, { recursive: true })
  fs.writeFileSync(path.join(TRANSCRIPTS, `${runner}.json`), JSON.stringify({ runner, cases: transcript }, null, 2) + '\n')
  return wrong
}

module.exports = { loadCases, loadTokens, caseConfig, requestLines, cost, echo, transcriptHeaders, check, connect, runSuite }
