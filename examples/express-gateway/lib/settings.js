'use strict'
/**
 * The gateway's settings from the environment, checked once at start: every value that is
 * set must be valid, and a bad one stops the program with a message that names the variable
 * and says what it should be (nothing is silently replaced by a default).
 *
 * | variable            | default                        | meaning                                        |
 * |---------------------|--------------------------------|------------------------------------------------|
 * | GATEWAY_HOST        | 127.0.0.1                      | the address the gateway listens on             |
 * | GATEWAY_PORT        | 8080                           | the gateway's port                             |
 * | UPSTREAM_PORTS      | 9001,9002,9003,9004            | orders-a, orders-b, catalog-a, catalog-b       |
 * | REDIS_URL           | (unset: the memory store)      | limiter state and the event stream in Redis    |
 * | JWT_SECRET          | (unset: the fixed demo secret) | the HS256 secret tokens are verified with      |
 * | FLAKY_FAILURE_RATE  | 0                              | share (0 to 1) of orders-b's calls that fail   |
 * | GATEWAY_CONFIG      | (unset: built from the above)  | an engine configuration file, reloaded live    |
 *
 * The sample upstreams always listen on 127.0.0.1. With `GATEWAY_CONFIG`, the engine is the
 * file's (TOML, or JSON if it ends in `.json`): its store, keys, rules and upstreams, reloaded
 * on SIGHUP and when the file changes (lib/reload.js); `REDIS_URL`, `JWT_SECRET` and
 * `UPSTREAM_PORTS` then only tell the launcher and the printed tokens what to use.
 * `node gateway.js --print-config` prints the configuration the environment makes, as a
 * start for such a file.
 */

const fs = require('node:fs')
const path = require('node:path')

/** The secret used when `JWT_SECRET` is unset: public, printed as such, for the demo only. */
const DEMO_SECRET = 'floodwall-demo-secret-not-for-production-0123456789'
/** HS256 keys shorter than this are refused by the engine (RFC 7518 §3.2). */
const MIN_SECRET_BYTES = 32

const DEFAULT_GATEWAY_PORT = 8080
const DEFAULT_UPSTREAM_PORTS = [9001, 9002, 9003, 9004]
/** The sample upstreams, in the order of `UPSTREAM_PORTS`: which service each belongs to. */
const UPSTREAMS = [
  { service: 'orders', name: 'orders-a' },
  { service: 'orders', name: 'orders-b', flaky: true },
  { service: 'catalog', name: 'catalog-a' },
  { service: 'catalog', name: 'catalog-b' }
]

/** An error in a setting: its message is meant for the person who started the program. */
class SettingsError extends Error {
  constructor (message) {
    super(message)
    this.name = 'SettingsError'
  }
}

/** A TCP port number from `text` (the value of `name`): an integer from 1 to 65535. */
function parsePort (name, text) {
  const trimmed = String(text).trim()
  if (!/^\d+$/.test(trimmed) || Number(trimmed) < 1 || Number(trimmed) > 65535) {
    throw new SettingsError(`${name} must be a port number from 1 to 65535, not ${JSON.stringify(String(text))}`)
  }
  return Number(trimmed)
}

/** Reads the settings from `env` (default `process.env`); throws a `SettingsError` on a bad value. */
function readSettings (env = process.env) {
  const present = (name) => env[name] !== undefined && env[name] !== ''

  const host = present('GATEWAY_HOST') ? env.GATEWAY_HOST.trim() : '127.0.0.1'
  const gatewayPort = present('GATEWAY_PORT') ? parsePort('GATEWAY_PORT', env.GATEWAY_PORT) : DEFAULT_GATEWAY_PORT

  let upstreamPorts = DEFAULT_UPSTREAM_PORTS
  if (present('UPSTREAM_PORTS')) {
    const parts = env.UPSTREAM_PORTS.split(',')
    if (parts.length !== UPSTREAMS.length) {
      throw new SettingsError(`UPSTREAM_PORTS must list ${UPSTREAMS.length} ports separated by commas (${UPSTREAMS.map((u) => u.name).join(', ')}), not ${JSON.stringify(env.UPSTREAM_PORTS)}`)
    }
    upstreamPorts = parts.map((part) => parsePort('UPSTREAM_PORTS', part))
  }
  const ports = [gatewayPort, ...upstreamPorts]
  if (new Set(ports).size !== ports.length) {
    throw new SettingsError(`GATEWAY_PORT and UPSTREAM_PORTS must be five different ports, not ${ports.join(', ')}`)
  }

  let redisUrl = null
  if (present('REDIS_URL')) {
    redisUrl = env.REDIS_URL.trim()
    let parsed = null
    try { parsed = new URL(redisUrl) } catch {}
    if (parsed === null || (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') || parsed.hostname === '') {
      throw new SettingsError(`REDIS_URL must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379, not ${JSON.stringify(env.REDIS_URL)}`)
    }
  }

  let secret = DEMO_SECRET
  let secretIsDemo = true
  if (present('JWT_SECRET')) {
    if (Buffer.byteLength(env.JWT_SECRET) < MIN_SECRET_BYTES) {
      throw new SettingsError(`JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes for HS256, not ${Buffer.byteLength(env.JWT_SECRET)}`)
    }
    secret = env.JWT_SECRET
    secretIsDemo = false
  }

  let flakyFailureRate = 0
  if (present('FLAKY_FAILURE_RATE')) {
    const rate = Number(env.FLAKY_FAILURE_RATE)
    if (env.FLAKY_FAILURE_RATE.trim() === '' || !Number.isFinite(rate) || rate < 0 || rate > 1) {
      throw new SettingsError(`FLAKY_FAILURE_RATE must be a number from 0 to 1 (the share of orders-b's calls that fail), not ${JSON.stringify(env.FLAKY_FAILURE_RATE)}`)
    }
    flakyFailureRate = rate
  }

  let configFile = null
  if (present('GATEWAY_CONFIG')) {
    configFile = path.resolve(env.GATEWAY_CONFIG.trim())
    let stat = null
    try { stat = fs.statSync(configFile) } catch {}
    if (stat === null || !stat.isFile()) {
      throw new SettingsError(`GATEWAY_CONFIG must name an engine configuration file (TOML, or JSON ending in .json), but ${JSON.stringify(env.GATEWAY_CONFIG)} is ${stat === null ? 'not there' : 'not a file'}`)
    }
  }

  return {
    host,
    gatewayPort,
    upstreams: UPSTREAMS.map((upstream, i) => ({ ...upstream, flaky: Boolean(upstream.flaky), port: upstreamPorts[i] })),
    redisUrl,
    secret,
    secretIsDemo,
    flakyFailureRate,
    configFile
  }
}

/** The environment that makes `readSettings` give back `settings` (for child processes). */
function settingsEnv (settings) {
  const env = {
    GATEWAY_HOST: settings.host,
    GATEWAY_PORT: String(settings.gatewayPort),
    UPSTREAM_PORTS: settings.upstreams.map((u) => u.port).join(','),
    FLAKY_FAILURE_RATE: String(settings.flakyFailureRate)
  }
  if (settings.redisUrl !== null) env.REDIS_URL = settings.redisUrl
  if (!settings.secretIsDemo) env.JWT_SECRET = settings.secret
  if (settings.configFile !== null) env.GATEWAY_CONFIG = settings.configFile
  return env
}

/**
 * A program's start: its command line read by `parseArgs` (given the arguments; omitted, the
 * program takes none) and the settings read from the environment. A `SettingsError` in
 * either is printed as `NAME: message` and ends the process with status 2.
 */
function startup (name, parseArgs = null) {
  try {
    const options = parseArgs === null ? {} : parseArgs(process.argv.slice(2))
    return { options, settings: readSettings() }
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error
    console.error(`${name}: ${error.message}`)
    process.exit(2)
  }
}

module.exports = { readSettings, startup, settingsEnv, parsePort, SettingsError, DEMO_SECRET, UPSTREAMS }
