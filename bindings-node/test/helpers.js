'use strict'
/**
 * Shared pieces of the binding's tests: the repository's fixture paths, loading the package
 * (retried while a rebuild replaces the addon), JWT minting with `jsonwebtoken`, the `[auth]`
 * and `[store]` sections the tests build engines from, and bounded polling.
 */

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const jwt = require('jsonwebtoken')

const PACKAGE = path.resolve(__dirname, '..')
const REPO = path.resolve(PACKAGE, '..')
const VECTORS = path.join(REPO, 'tests', 'vectors')
const JWT_FIXTURES = path.join(REPO, 'tests', 'fixtures', 'jwt')

/**
 * The package under test. The addon is rebuilt now and then while these tests are written;
 * a load that fails is retried (a bounded number of times, a second apart).
 */
function loadFloodwall () {
  let lastError
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      return require(PACKAGE)
    } catch (error) {
      lastError = error
      for (const key of Object.keys(require.cache)) {
        if (key.startsWith(PACKAGE) && !key.includes(`${path.sep}node_modules${path.sep}`) && !key.includes(`${path.sep}test${path.sep}`)) {
          delete require.cache[key]
        }
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)
    }
  }
  throw lastError
}

const floodwall = loadFloodwall()

/** The variable the fixtures' `hmac-env` key reads its secret from. */
const HMAC_SECRET_ENV = 'FLOODWALL_TEST_HMAC_SECRET'
/** An HMAC secret for tokens minted by the tests (HS256 needs at least 32 bytes). */
const TEST_SECRET = 'floodwall-node-tests-hmac-secret-0123456789'
/** Another secret of the same kind, for rotations and bad signatures. */
const NEW_SECRET = 'the-rotated-secret-of-floodwall-node-tests-987654'

const DESCRIPTIONS = {
  malformed_token: 'The access token is malformed',
  token_too_large: 'The access token is too large',
  algorithm_not_allowed: 'The access token is signed with an algorithm that is not accepted',
  unknown_key: 'The access token is signed by an unknown key',
  bad_signature: 'The access token signature is invalid',
  expired: 'The access token expired',
  not_yet_valid: 'The access token is not valid yet',
  wrong_issuer: 'The access token issuer is not accepted',
  wrong_audience: 'The access token audience is not accepted',
  missing_claim: 'The access token lacks a required claim',
  invalid_claim: 'The access token has a claim of the wrong type'
}
/** The `WWW-Authenticate` value of each authentication kind (the core's fixed texts). */
const CHALLENGES = {
  missing_token: 'Bearer realm="floodwall"',
  ...Object.fromEntries(Object.entries(DESCRIPTIONS).map(([kind, text]) =>
    [kind, `Bearer realm="floodwall", error="invalid_token", error_description="${text}"`]))
}

/** `tests/fixtures/jwt/cases.json`: `now` (seconds), `config`, `error_kinds`, `cases`. */
function loadJwtCases () {
  return JSON.parse(fs.readFileSync(path.join(JWT_FIXTURES, 'cases.json'), 'utf8'))
}

/** An engine from `tests/fixtures/jwt/floodwall.toml`, with the `hmac-env` secret set. */
function fixtureEngine (cases = loadJwtCases()) {
  process.env[HMAC_SECRET_ENV] = cases.config.env[HMAC_SECRET_ENV]
  return floodwall.Engine.fromFile(path.join(JWT_FIXTURES, 'floodwall.toml'))
}

/**
 * An `Authorization` value (`Bearer <HS256 JWT>`) minted by jsonwebtoken: `sub` and, with
 * `role`, a `role` claim; `exp` `expiresIn` seconds after `now` (seconds, the wall clock by
 * default); `expiresIn: null` for no `exp`, `subject: null` for no `sub`.
 */
function mint (subject = 'alice', { role, secret = TEST_SECRET, kid, expiresIn = 3600, now, claims = {} } = {}) {
  const at = now === undefined ? Date.now() / 1000 : now
  const payload = { ...claims }
  if (subject !== null) payload.sub = subject
  if (role !== undefined) payload.role = role
  if (expiresIn !== null) payload.exp = Math.floor(at + expiresIn)
  const options = { algorithm: 'HS256', noTimestamp: true }
  if (kid !== undefined) options.keyid = kid
  return 'Bearer ' + jwt.sign(payload, secret, options)
}

/** An `[auth]` section accepting HS256 tokens signed with `secret`, roles from `role`. */
function hs256Auth (secret = TEST_SECRET, fields = {}) {
  return { algorithms: ['HS256'], keys: [{ secret }], role_claim: 'role', ...fields }
}

/** A `[store]` section on `server` with a key prefix no other engine uses. */
function redisStore (server, fields = {}) {
  return {
    kind: 'redis',
    url: server.url,
    prefix: `node-${crypto.randomBytes(6).toString('hex')}:`,
    timeout: '2s',
    ...fields
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `condition` (sync or async) at most `attempts` times, `pauseMs` apart; answers
 * whether it held.
 */
async function waitUntil (condition, { attempts = 500, pauseMs = 20 } = {}) {
  for (let i = 0; i < attempts; i++) {
    if (await condition()) return true
    await sleep(pauseMs)
  }
  return Boolean(await condition())
}

/**
 * Runs `start()` (which returns a Promise) beside a 10 ms ticker; answers the Promise's
 * result, and how many times the ticker fired while it was pending. The ticker is bounded
 * (at most 6000 ticks) and always cleared.
 */
async function ticksWhile (start) {
  const state = { pending: true, ticks: 0, total: 0 }
  const ticker = setInterval(() => {
    state.total++
    if (state.pending) state.ticks++
    if (state.total >= 6000) clearInterval(ticker)
  }, 10)
  let result
  try {
    result = await start()
  } finally {
    state.pending = false
    clearInterval(ticker)
  }
  return { result, ticks: state.ticks }
}

module.exports = {
  floodwall,
  PACKAGE,
  REPO,
  VECTORS,
  JWT_FIXTURES,
  HMAC_SECRET_ENV,
  TEST_SECRET,
  NEW_SECRET,
  CHALLENGES,
  loadJwtCases,
  fixtureEngine,
  mint,
  hs256Auth,
  redisStore,
  sleep,
  waitUntil,
  ticksWhile
}
