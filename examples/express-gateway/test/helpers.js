'use strict'
/**
 * Shared pieces of the gateway's tests: a whole stack — the four sample upstreams and the
 * gateway — in this process on free 127.0.0.1 ports (real HTTP, nothing mocked), tokens for
 * sample callers, an HTTP client that sends one request on a fresh connection, and bounded
 * polling. Redis servers come from the Node package's test harness
 * (bindings-node/test/redis_server.js: a test that needs Redis fails when it cannot start one).
 */

const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')

const { startGateway, configOf } = require('../gateway.js')
const { listenUpstream } = require('../upstream.js')
const { readSettings } = require('../lib/settings.js')
const { mintToken } = require('../lib/tokens.js')

const EXAMPLE = path.resolve(__dirname, '..')
const REPO = path.resolve(EXAMPLE, '..', '..')
/** Where tests leave files for people to look at (the dashboard's screenshot). */
const ARTIFACTS = path.join(REPO, 'target', 'artifacts')
/** A bound on one request (not an assertion: a request that takes this long fails the test). */
const REQUEST_TIMEOUT_MS = 10_000

/**
 * Starts the upstreams and the gateway. `limits`, `breaker`, `redisPrefix` and `stream` go
 * to the engine's configuration (lib/config.js); `redisUrl` selects the Redis store;
 * `flakyFailureRate` is orders-b's share of failing calls. With `configDir`, that
 * configuration is written to `configDir/gateway.json` and the gateway runs from the file,
 * watching it (`reloadDebounceMs` its debounce, `log` where it says what it reloaded). Resolves with
 * `{ url, engine, settings, reloader, configFile, writeConfig(overrides), token(subject, role), close() }`
 * (`writeConfig` writes the configuration with other `{ limits, breaker }` to the file).
 */
async function startStack ({ redisUrl = null, limits, breaker, redisPrefix, stream, flakyFailureRate = 0, configDir = null, reloadDebounceMs, log } = {}) {
  const base = readSettings({})
  const upstreamServers = []
  try {
    for (const upstream of base.upstreams) {
      upstreamServers.push(await listenUpstream({ ...upstream, failureRate: flakyFailureRate }, 0))
    }
  } catch (error) {
    for (const server of upstreamServers) server.close()
    throw error
  }
  const settings = {
    ...base,
    redisUrl,
    upstreams: base.upstreams.map((u, i) => ({ ...u, port: upstreamServers[i].address().port }))
  }
  const configFile = configDir === null ? null : path.join(configDir, 'gateway.json')
  const writeConfig = (overrides = {}) => {
    const config = configOf({ settings, limits, breaker, redisPrefix, stream, ...overrides })
    writeAtomically(configFile, JSON.stringify(config, null, 2))
  }
  if (configFile !== null) {
    writeConfig()
    settings.configFile = configFile
  }
  let gateway
  try {
    gateway = await startGateway({ settings, port: 0, host: '127.0.0.1', limits, breaker, redisPrefix, stream, reloadDebounceMs, log })
  } catch (error) {
    for (const server of upstreamServers) server.close()
    throw error
  }
  return {
    url: gateway.url,
    engine: gateway.engine,
    settings,
    reloader: gateway.reloader,
    configFile,
    writeConfig,
    token: (subject, role) => mintToken(settings.secret, { subject, role }),
    async close () {
      await gateway.close()
      await Promise.all(upstreamServers.map((server) => new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })))
    }
  }
}

/** Writes `text` to `file` as editors save: a new file renamed over the old one. */
function writeAtomically (file, text) {
  const temporary = `${file}.${process.pid}.tmp`
  fs.writeFileSync(temporary, text)
  fs.renameSync(temporary, file)
}

/**
 * One request on a fresh connection: resolves with `{ status, headers, text, json }` (`json`
 * the parsed body when it is JSON, else undefined). `token` adds `Authorization: Bearer …`.
 */
function request (url, { method = 'GET', token, headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const allHeaders = { ...headers }
    if (token !== undefined) allHeaders.Authorization = `Bearer ${token}`
    if (body !== undefined) allHeaders['Content-Length'] = Buffer.byteLength(body)
    const req = http.request(url, { method, headers: allHeaders, agent: false, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks = []
      res.on('data', (chunk) => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json
        if (/json/.test(res.headers['content-type'] || '')) {
          try { json = JSON.parse(text) } catch {}
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `condition` (sync or async) at most `attempts` times, `pauseMs` apart; answers whether it held. */
async function waitUntil (condition, { attempts = 250, pauseMs = 20 } = {}) {
  for (let i = 0; i < attempts; i++) {
    if (await condition()) return true
    await sleep(pauseMs)
  }
  return Boolean(await condition())
}

/** The Redis test servers (bindings-node's harness). */
function redisHarness () {
  return require(path.join(REPO, 'bindings-node', 'test', 'redis_server.js'))
}

module.exports = { startStack, writeAtomically, request, sleep, waitUntil, redisHarness, EXAMPLE, REPO, ARTIFACTS }
