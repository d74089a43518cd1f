'use strict'
/**
 * The values the engine hands out: a `Decision` (over its row of numbers), a verified
 * `Identity`, and an upstream `Lease`. Part of the `floodwall` package; `index.js` exports
 * them.
 */

const native = require('./native.js')
const { call } = require('./errors.js')

const STORES = ['memory', 'redis', 'fallback', 'unavailable', 'deny_cache']
const HEAD = 6
const PER_LAYER = 7

/**
 * Whether a request may pass, which rule decided, and the headers to send. Read-only: its
 * fields are getters over private state.
 */
class Decision {
  #allowed
  #blocked
  #store
  #rule
  #limit
  #remaining
  #resetAfterMs
  #retryAfterMs
  #deciding
  #rows
  #engine
  #permit

  /** The decision whose row starts at `base` of `row` (src/decision.rs), made by `engine`. */
  constructor (row, engine, base = 0) {
    const n = row[base + 2]
    const deciding = row[base + 3]
    this.#allowed = row[base] === 1
    this.#blocked = row[base] === 2
    this.#store = STORES[row[base + 1]]
    this.#retryAfterMs = row[base + 4]
    this.#permit = row[base + 5]
    if (this.#permit !== 0) PERMITS.register(this, { engine, id: this.#permit }, this)
    this.#engine = engine
    this.#deciding = deciding
    if (deciding < 0) {
      this.#rule = null
      this.#limit = null
      this.#remaining = null
      this.#resetAfterMs = 0
      this.#rows = n === 0 ? EMPTY : row.slice(base + HEAD, base + HEAD + PER_LAYER * n)
    } else {
      const at = base + HEAD + PER_LAYER * deciding
      this.#rule = engine._ruleNames[row[at]]
      this.#limit = row[at + 2]
      this.#remaining = row[at + 3]
      this.#resetAfterMs = row[at + 4]
      // One layer (the usual case) needs no copy of its row: the fields above and its
      // window are all the headers read.
      this.#rows = n === 1 ? row[at + 6] : row.slice(base + HEAD, base + HEAD + PER_LAYER * n)
    }
  }

  /** Whether the request may pass. */
  get allowed () { return this.#allowed }
  /** Which store decided: `memory`, `redis`, `fallback` or `unavailable`. */
  get store () { return this.#store }
  /** The deciding rule's name; null when no rule matched. */
  get rule () { return this.#rule }
  /** The deciding layer's limit (or bucket capacity); null when no rule matched. */
  get limit () { return this.#limit }
  /** The largest cost the deciding layer would admit now; null when no rule matched. */
  get remaining () { return this.#remaining }
  /** Milliseconds until the deciding layer is back at its full quota (rounded up). */
  get resetAfterMs () { return this.#resetAfterMs }
  /** When denied, milliseconds after which the same request passes; 0 when admitted. */
  get retryAfterMs () { return this.#retryAfterMs }
  /** Whether it is denied because its key is blocked (`block_for`): retryAfterMs is the block's end. */
  get blocked () { return this.#blocked }
  /** Whether it holds places of `concurrency` rules, until `release()`. */
  get holds () { return this.#permit !== 0 }

  /**
   * Gives back the places the decision holds of `concurrency` rules once the request is done;
   * the Promise settles (true) once they are back — on Redis after the round trip, which
   * the event loop does not wait for. Nothing (false) when it holds none. A decision collected
   * unreleased releases then; one never released ends after the rule's max_hold.
   */
  release () {
    const id = this.#permit
    if (id === 0) return Promise.resolve(false)
    this.#permit = 0
    PERMITS.unregister(this)
    return this.#engine._releasePermit(id)
  }

  /** The response headers the configuration asks for (a new object on every read). */
  get headers () {
    const headers = {}
    if (this.#rule === null) return headers
    const rows = this.#layerRows()
    const row = new Float64Array(HEAD + rows.length)
    row[0] = this.#allowed ? 1 : 0
    row[2] = rows.length / PER_LAYER
    row[3] = typeof this.#rows === 'number' ? 0 : this.#deciding
    row[4] = this.#retryAfterMs
    row.set(rows, HEAD)
    const pairs = this.#engine._decisionHeaders(row)
    for (let i = 0; i + 1 < pairs.length; i += 2) headers[pairs[i]] = pairs[i + 1]
    return headers
  }

  /** The layers' rows (a one-layer decision keeps only its window until asked). */
  #layerRows () {
    const rows = this.#rows
    if (typeof rows !== 'number') return rows
    const ruleIndex = this.#engine._ruleNames.indexOf(this.#rule)
    return Float64Array.of(ruleIndex, this.#allowed ? 1 : 0, this.#limit, this.#remaining,
      this.#resetAfterMs, this.#retryAfterMs, rows)
  }

  /** Every matched rule's part in the decision, in configuration order. */
  get layers () {
    const rows = this.#layerRows()
    const names = this.#engine._ruleNames
    const layers = []
    for (let at = 0; at < rows.length; at += PER_LAYER) {
      layers.push(Object.freeze({
        rule: names[rows[at]],
        allowed: rows[at + 1] === 1,
        limit: rows[at + 2],
        remaining: rows[at + 3],
        resetAfterMs: rows[at + 4],
        retryAfterMs: rows[at + 5]
      }))
    }
    return layers
  }

  toJSON () {
    const { allowed, rule, limit, remaining, resetAfterMs, retryAfterMs, blocked, store } = this
    return { allowed, rule, limit, remaining, resetAfterMs, retryAfterMs, blocked, store, headers: this.headers }
  }

  [Symbol.for('nodejs.util.inspect.custom')] () {
    return `Decision ${JSON.stringify({ ...this.toJSON(), headers: undefined })}`
  }
}
const EMPTY = new Float64Array(0)
/** Releases what a decision collected unreleased still holds. */
const PERMITS = new FinalizationRegistry(({ engine, id }) => engine._releasePermit(id))

/** The caller a verified token names. Read-only: its fields are getters over private state. */
class Identity {
  #fields
  #engine
  #authorization
  #nowMs

  constructor (fields, engine, authorization, nowMs) {
    this.#fields = fields
    this.#engine = engine
    this.#authorization = authorization
    this.#nowMs = nowMs
  }

  // `fields` is the addon's [subject, role, keyId, algorithm, expiresAtMs] (fastpath.rs).
  /** The subject (by default the `sub` claim). */
  get subject () { return this.#fields[0] }
  /** The role from the configured claim, or the default role; null when neither. */
  get role () { return this.#fields[1] ?? null }
  /** The `kid` of the key that verified the token; null when it had none. */
  get keyId () { return this.#fields[2] ?? null }
  /** The algorithm the token was verified with. */
  get algorithm () { return this.#fields[3] }
  /** `exp` in ms since the Unix epoch; null when the token has none. */
  get expiresAtMs () { return this.#fields[4] ?? null }

  toJSON () {
    const { subject, role, keyId, algorithm, expiresAtMs } = this
    return { subject, role, keyId, algorithm, expiresAtMs }
  }

  [Symbol.for('nodejs.util.inspect.custom')] () {
    return `Identity ${JSON.stringify(this.toJSON())}`
  }

  /**
   * Every claim of the token (a new object on every read). Read when asked: the token is
   * verified again (a cache hit when the engine caches tokens), so a token refused since —
   * expired, its key rotated away — throws its FloodwallError here.
   */
  get claims () {
    return JSON.parse(call(() => native.claimsJson(this.#engine._handle, this.#authorization, this.#nowMs)))
  }

  /** One claim by dotted path (`realm_access.roles`); `undefined` when absent. */
  claim (path) {
    const claims = this.claims
    if (Object.prototype.hasOwnProperty.call(claims, path)) return claims[path]
    let value = claims
    for (const part of path.split('.')) {
      if (value === null || typeof value !== 'object' || !Object.prototype.hasOwnProperty.call(value, part)) return undefined
      value = value[part]
    }
    return value
  }
}

/** The addon's identity object (the worker-thread path) as the fast path's array. */
function identityFields (f) {
  return [f.subject, f.role, f.keyId, f.algorithm, f.expiresAtMs]
}

/** One call in progress on a picked upstream; finish it exactly once. */
class Lease {
  constructor (inner) {
    this.service = inner.service
    this.upstream = inner.upstream
    this.url = inner.url
    this.isProbe = inner.isProbe
    Object.defineProperty(this, '_inner', { value: inner })
    Object.freeze(this)
  }

  /** Whether the lease is finished. */
  get finished () {
    return this._inner.finished
  }

  /**
   * Records how the call ended and how long it took, in milliseconds (by default the time
   * since the pick). A second call throws.
   */
  finish (outcome, latencyMs) {
    call(() => this._inner.finish(outcome, latencyMs))
  }
}

const UPSTREAM_FIELDS = {
  open_until_ms: 'openUntilMs',
  in_flight: 'inFlight',
  failure_rate: 'failureRate',
  slow_call_rate: 'slowCallRate',
  mean_latency_us: 'meanLatencyUs',
  max_latency_us: 'maxLatencyUs'
}

module.exports = { Decision, Identity, identityFields, Lease, UPSTREAM_FIELDS }
