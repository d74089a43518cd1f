'use strict'
/**
 * floodwall for Node: the hot-path decisions of an API gateway — JWT authentication, layered
 * rate limits by role, circuit breakers and load balancing — made by a Rust engine.
 *
 * This module gives the addon (`native.js`) its idiomatic shape. What it guarantees:
 * - Anything that may wait on Redis (`check`, `checkMany`, `authorize` on a Redis store) runs
 *   on the addon's worker threads and returns a Promise; the event loop never waits.
 *   `checkSync`/`authorizeSync`/`checkManySync` exist for memory stores, where nothing waits,
 *   and refuse a Redis engine rather than block the loop.
 * - Every error the engine reports is a `FloodwallError` with a stable `code` (the core's kind
 *   names, all in `ERROR_CODES`), the HTTP `status`, and for authentication rejections the
 *   `wwwAuthenticate` value. A bad argument is a `TypeError`.
 * - A decision crosses the boundary as a row of numbers (see `src/decision.rs`); `Decision`
 *   reads it, and asks the engine for its headers only when they are read (the core renders
 *   them from the row).
 * - Monitoring: the engine records every decision, refused token and upstream call itself;
 *   `recordResponse` records a host's answer (the Express middlewares call it for every
 *   response). `report()` answers the report as a plain object with the JSON's snake_case
 *   keys — the same document in every binding — and `prometheus()` the counters as
 *   Prometheus text (`PROMETHEUS_CONTENT_TYPE`). All of it is in-process: nothing waits.
 */

const { EventEmitter } = require('events')
const native = require('./native.js')

const ERROR_CODES = Object.freeze(native.errorCodes())
const OUT = new Float64Array(native.maxDecisionLen())
const { FloodwallError, convert, describe, call } = require('./errors.js')
const { Decision, Identity, identityFields, Lease, UPSTREAM_FIELDS } = require('./values.js')

function camel (status) {
  const out = {}
  for (const [key, value] of Object.entries(status)) out[UPSTREAM_FIELDS[key] || key] = value
  return out
}

function requireRequests (requests) {
  if (requests === null || requests === undefined || typeof requests[Symbol.iterator] !== 'function' || typeof requests === 'string') {
    throw new TypeError('the requests must be an iterable (an array) of request objects')
  }
  return Array.from(requests, requireRequest)
}

const NO_KEY_OPTIONS = [null, null]

/** `[role, nowMs]` of a key operation's options. */
function keyOptions (options) {
  if (options === undefined || options === null) return NO_KEY_OPTIONS
  if (typeof options !== 'object') throw new TypeError('the options must be an object such as { role, nowMs }')
  return [options.role ?? null, options.nowMs ?? null]
}

function requireRequest (request) {
  if (request === undefined || request === null) return {}
  if (typeof request !== 'object') throw new TypeError('the request must be an object such as { subject, role, method, path, ip, cost }')
  return request
}

/**
 * `check` on a shared store: requests go to the addon's dispatcher (src/dispatch.rs), which
 * decides whatever has queued in one pipelined round trip; this side keeps the promises by id
 * and settles them when the addon says results wait.
 */
function dispatcher (inner, engine) {
  const waiting = new Map()
  // The addon keeps `settleAll` alive (its thread-safe function holds it), so it must not
  // reach the engine, `inner` or `enqueue`: the engine could never be collected. Each closure
  // is made in a scope of its own, holding only what it uses; the decisions it makes reach the
  // engine (for their headers) through a weak reference.
  const ref = new WeakRef(engine)
  const meta = Object.freeze({
    // The names in force when a decision is read: a reload replaces them.
    get _ruleNames () {
      const engine = ref.deref()
      return engine === undefined ? [] : engine._ruleNames
    },
    _decisionHeaders: weakHeaders(ref),
    _releasePermit: weakRelease(ref)
  })
  const addon = {}
  const [enqueue, drain, errors] = inner.dispatcher(settler(waiting, meta, addon))
  addon.drain = drain
  addon.errors = errors
  return checker(waiting, enqueue)
}

function weakHeaders (ref) {
  return (row) => {
    const engine = ref.deref()
    return engine === undefined ? [] : engine._decisionHeaders(row)
  }
}

function weakRelease (ref) {
  return (id) => {
    const engine = ref.deref()
    return engine === undefined ? Promise.resolve(false) : engine._releasePermit(id)
  }
}

function settler (waiting, meta, addon) {
  const out = new Float64Array(1 << 16)
  return function settleAll () {
    for (;;) {
      const written = addon.drain(out)
      const count = Math.abs(written)
      let messages = null
      for (let at = 0; at < count;) {
        const id = out[at]
        const kind = out[at + 1]
        const n = out[at + 2]
        const promise = waiting.get(id)
        waiting.delete(id)
        if (kind === 0) {
          promise.resolve(new Decision(out.subarray(at + 3, at + 3 + n), meta))
          at += 3 + n
        } else {
          messages = messages || addon.errors()
          promise.reject(convert(new Error(messages[n])))
          at += 3
        }
      }
      if (written >= 0) return
    }
  }
}

function checker (waiting, enqueue) {
  let nextId = 1
  return function check (request) {
    return new Promise((resolve, reject) => {
      const id = nextId++
      waiting.set(id, { resolve, reject })
      try {
        const r = requireRequest(request)
        enqueue(id, r.subject, r.role, r.method, r.path, r.ip, r.cost, r.nowMs, r.headers)
      } catch (error) {
        waiting.delete(id)
        reject(convert(error))
      }
    })
  }
}

function storeHealth (h) {
  return { state: h.state, sinceMs: h.sinceMs, reason: h.reason ?? null, reasonKind: h.reasonKind ?? null }
}

/**
 * The traffic-control engine: rules, a store, keys and services from one configuration.
 *
 * On Redis it emits `storeHealth` (`health`, `message`) at each transition of the store's
 * health: `degraded` or `failing` when Redis stops answering, `ok` when it is back.
 */
class Engine extends EventEmitter {
  constructor (inner) {
    if (!(inner instanceof native.Engine)) {
      throw new TypeError('build an Engine with Engine.fromFile, fromToml, fromJson or fromObject')
    }
    super()
    Object.defineProperty(this, '_inner', { value: inner })
    Object.defineProperty(this, '_ruleNames', { value: Object.freeze(inner.rules), writable: true })
    Object.defineProperty(this, '_mayWait', { value: inner.mayWait })
    Object.defineProperty(this, '_handle', { value: inner.handle() })
    Object.defineProperty(this, '_httpBinding', { value: undefined, writable: true })
    Object.defineProperty(this, '_checkSync', { value: inner.checkFunction() })
    Object.defineProperty(this, '_authenticate', { value: inner.authenticateFunction() })
    Object.defineProperty(this, '_authorizeSync', { value: inner.authorizeFunction() })
    Object.defineProperty(this, '_recordResponse', { value: inner.recordResponseFunction() })
    if (this._mayWait) {
      Object.defineProperty(this, '_dispatch', { value: dispatcher(inner, this) })
      // Weakly: the native listener must not keep the engine alive.
      const engine = new WeakRef(this)
      inner.onStoreHealth((h, message) => {
        engine.deref()?.emit('storeHealth', storeHealth(h), message)
      })
    }
  }

  /** An engine from TOML configuration text. */
  static fromToml (text) {
    return new Engine(call(() => native.Engine.fromToml(text)))
  }

  /** An engine from JSON configuration text. */
  static fromJson (text) {
    return new Engine(call(() => native.Engine.fromJson(text)))
  }

  /** An engine from a configuration file: JSON if it ends in `.json`, TOML otherwise. */
  static fromFile (path) {
    return new Engine(call(() => native.Engine.fromFile(String(path))))
  }

  /**
   * An engine from a configuration object (the TOML schema's structure). An invalid field is
   * a FloodwallError whose `field` is its path (`rules[0].limit`).
   */
  static fromObject (config) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new TypeError(`the configuration must be an object, not ${describe(config)}`)
    }
    let text
    try {
      text = JSON.stringify(config)
    } catch (error) {
      throw new TypeError(`the configuration must hold only JSON values: ${error.message}`)
    }
    return new Engine(call(() => native.Engine.fromObjectJson(text)))
  }

  _decisionHeaders (row) {
    return this._inner.decisionHeaders(row, 0)
  }

  _releasePermit (id) {
    return this._mayWait ? this._inner.releasePermitAsync(id) : Promise.resolve(this._inner.releasePermit(id))
  }

  /**
   * The HTTP layer's functions and the header names they read (src/http.rs), made again when
   * the access lists change.
   */
  _http () {
    let binding = this._httpBinding
    if (binding === undefined) {
      const [names, responseNames, sync, async, finishSync, finishAsync] = this._inner.httpFunctions()
      const index = new Map(names.map((name, i) => [name, i]))
      binding = Object.freeze({ names, responseNames, index, lengths: new Set(names.map((n) => n.length)), sync, async, finishSync, finishAsync })
      this._httpBinding = binding
    }
    return binding
  }

  /** The request headers the HTTP layer reads (lower-case): all a middleware hands over. */
  get httpHeaders () { return this._http().names.slice() }

  /** The allow and deny lists in force: `{ allow, deny }` (see the `[http]` section). */
  accessLists () {
    return JSON.parse(this._inner.accessListsJson())
  }

  /**
   * Replaces the allow and deny lists while serving (`{ allow: { addresses, subjects, roles,
   * headers }, deny: { ... } }`); on error (a FloodwallError naming the entry) the lists in
   * force stay.
   */
  setAccessLists (lists) {
    if (lists === null || typeof lists !== 'object' || Array.isArray(lists)) {
      throw new TypeError(`setAccessLists(): the lists must be an object { allow, deny }, not ${describe(lists)}`)
    }
    call(() => this._inner.setAccessListsJson(JSON.stringify(lists)))
    this._httpBinding = undefined
  }

  _refuseWait (what) {
    if (this._mayWait) {
      throw new FloodwallError(
        `${what} would block the event loop on a ${this.storeKind} store: use the Promise-returning method`,
        { code: 'invalid_config', status: 503, field: 'store.kind' }
      )
    }
  }

  /**
   * Decides on the calling thread: for memory stores, where nothing waits. Admitted requests
   * consume `cost` from every matching limit (all or nothing).
   */
  checkSync (request) {
    this._refuseWait('checkSync')
    const r = requireRequest(request)
    try {
      const { subject, role, method, path, ip, cost, nowMs, headers } = r
      // Only up to the last given argument: the addon reads nothing it is not passed.
      if (cost != null || nowMs != null || headers != null) {
        this._checkSync(OUT, subject, role, method, path, ip, cost, nowMs, headers)
      } else if (role != null || method != null || path != null || ip != null) {
        this._checkSync(OUT, subject, role, method, path, ip)
      } else {
        this._checkSync(OUT, subject)
      }
    } catch (error) {
      throw convert(error)
    }
    return new Decision(OUT, this)
  }

  /** Decides; on Redis off the JS thread. */
  check (request) {
    if (!this._mayWait) {
      try {
        return Promise.resolve(this.checkSync(request))
      } catch (error) {
        return Promise.reject(error)
      }
    }
    return this._dispatch(request)
  }

  _many (results) {
    return results.map((entry) => typeof entry === 'string'
      ? convert(Object.assign(new Error(entry)))
      : new Decision(entry, this))
  }

  /** A batch of requests (as `check` takes them): one Decision or FloodwallError each. */
  checkManySync (requests) {
    this._refuseWait('checkManySync')
    return this._many(call(() => this._inner.checkManySync(requireRequests(requests))))
  }

  /** A batch, in one Redis round trip, off the JS thread. */
  checkMany (requests) {
    if (!this._mayWait) {
      try {
        return Promise.resolve(this.checkManySync(requests))
      } catch (error) {
        return Promise.reject(error)
      }
    }
    let pending
    try {
      pending = this._inner.checkMany(requireRequests(requests))
    } catch (error) {
      return Promise.reject(convert(error))
    }
    return pending.then((results) => this._many(results), (error) => { throw convert(error) })
  }

  /**
   * Decides like `check` and, while the request is denied with a wait that fits in
   * `maxWaitMs`, waits for capacity and asks again: first come, first served among this
   * engine's waiters for the same limits, woken early when a `concurrency` place is
   * released here. Resolves to the admission, or the last denial. Nothing waits on the JS
   * thread; it decides on the engine's clock.
   */
  acquire (request, maxWaitMs) {
    let pending
    try {
      if (typeof maxWaitMs !== 'number') throw new TypeError('acquire(): maxWaitMs must be a number of milliseconds')
      pending = this._inner.acquire(requireRequest(request), maxWaitMs)
    } catch (error) {
      return Promise.reject(convert(error))
    }
    return pending.then((row) => new Decision(row, this), (error) => { throw convert(error) })
  }

  /**
   * What `key` of `rule` has left now (for `options.role`'s policy); consumes nothing. The key
   * is as the rule counts it (a subject, an address, a header's value, `'GET /path'`); null
   * names the requests lacking the keyed part. Resolves to `{ limit, remaining, resetAfterMs,
   * blockedForMs, keyLimitForMs, store }` (`keyLimitForMs`: how much longer the key's own
   * limit, from `setKeyLimit`, is in force — `limit` is that limit meanwhile — or null).
   */
  inspect (rule, key, options) {
    return this._key(() => this._inner.inspectKey(rule, key ?? null, ...keyOptions(options)))
      .then((s) => Object.freeze({
        limit: s.limit, remaining: s.remaining, resetAfterMs: s.resetAfterMs, blockedForMs: s.blockedForMs ?? null, keyLimitForMs: s.keyLimitForMs ?? null, store: s.store
      }))
  }

  /** Starts `key` of `rule` afresh: what it counted and its block are forgotten. */
  resetKey (rule, key, options) {
    return this._key(() => this._inner.administerKey('reset', rule, key ?? null, ...keyOptions(options)))
  }

  /** Blocks `key` of `rule` for `durationMs` (a rule with `block_for`). */
  blockKey (rule, key, durationMs, options) {
    return this._key(() => this._inner.administerKey('block', rule, key ?? null, ...keyOptions(options), durationMs))
  }

  /** Takes `points` from `key` of `rule` now, as requests would. */
  penalize (rule, key, points, options) {
    return this._key(() => this._inner.administerKey('penalize', rule, key ?? null, ...keyOptions(options), points))
  }

  /** Gives `points` back to `key` of `rule` now. */
  reward (rule, key, points, options) {
    return this._key(() => this._inner.administerKey('reward', rule, key ?? null, ...keyOptions(options), points))
  }

  /**
   * Judges `key` of `rule` by its own `limit` (a token bucket's capacity) for `lifetimeMs`
   * (1 ms to 366 days) from now, replacing any own limit it had; then by its policy again. The
   * rule must take key limits (`key_limits = true`).
   */
  setKeyLimit (rule, key, limit, lifetimeMs, options) {
    return this._key(() => this._inner.administerKey('limit', rule, key ?? null, ...keyOptions(options), limit, lifetimeMs))
  }

  /** Takes the own limit of `key` of `rule` away: its policy's applies again. */
  clearKeyLimit (rule, key, options) {
    return this._key(() => this._inner.administerKey('clear_limit', rule, key ?? null, ...keyOptions(options)))
  }

  _key (call) {
    let pending
    try {
      pending = call()
    } catch (error) {
      return Promise.reject(convert(error))
    }
    return pending.then((value) => value, (error) => { throw convert(error) })
  }

  /**
   * Verifies a bearer token (an `Authorization` value). Verification never waits on the
   * network, so it runs on the calling thread.
   */
  authenticate (authorization, options) {
    const nowMs = options ? options.nowMs : undefined
    let fields
    try {
      fields = nowMs === undefined ? this._authenticate(authorization) : this._authenticate(authorization, nowMs)
    } catch (error) {
      throw convert(error)
    }
    return new Identity(fields, this, authorization, nowMs)
  }

  /** Authenticates and checks under the token's subject and role, on the calling thread. */
  authorizeSync (authorization, request) {
    this._refuseWait('authorizeSync')
    const r = requireRequest(request)
    let identity
    try {
      const { method, path, ip, cost, nowMs, headers } = r
      identity = cost != null || nowMs != null || headers != null
        ? this._authorizeSync(OUT, authorization, method, path, ip, cost, nowMs, headers)
        : this._authorizeSync(OUT, authorization, method, path, ip)
    } catch (error) {
      throw convert(error)
    }
    return { identity: new Identity(identity, this, authorization), decision: new Decision(OUT, this) }
  }

  /** Authenticates and checks; on Redis off the JS thread. */
  authorize (authorization, request) {
    if (!this._mayWait) {
      try {
        return Promise.resolve(this.authorizeSync(authorization, request))
      } catch (error) {
        return Promise.reject(error)
      }
    }
    let pending
    try {
      const r = requireRequest(request)
      pending = this._inner.authorize(authorization, r.method, r.path, r.ip, r.cost, r.nowMs, r.headers)
    } catch (error) {
      return Promise.reject(convert(error))
    }
    return pending.then(
      (a) => ({ identity: new Identity(identityFields(a.identity()), this, authorization), decision: new Decision(a.decision(), this) }),
      (error) => { throw convert(error) })
  }

  /**
   * Puts a whole new configuration in force while serving — rules, `http`, `headers`, `auth`,
   * services, the monitor's stream — all at once: an object of the configuration's structure.
   * A rule whose limits are unchanged keeps its counts, a changed one starts afresh, unchanged
   * upstreams keep their breakers. Answers what it did: `{ rules: [{ name, change }],
   * upstreams: { kept, started, removed }, auth_changed, generations }` (`change`:
   * `unchanged`, `kept`, `restarted`, `added` or `removed`). On error (a FloodwallError naming
   * the field) nothing changes.
   */
  reload (config) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new TypeError(`reload(): config must be an object (the configuration), not ${describe(config)}`)
    }
    return this._reloaded(JSON.stringify(config), 'json')
  }

  /** `reload` from TOML text. */
  reloadToml (text) { return this._reloaded(String(text), 'toml') }

  /** `reload` from JSON text. */
  reloadJson (text) { return this._reloaded(String(text), 'json') }

  /** `reload` from a file (JSON if it ends in `.json`, TOML otherwise). */
  reloadFile (path) { return this._reloaded(String(path), 'file') }

  _reloaded (source, format) {
    const summary = JSON.parse(call(() => this._inner.reload(source, format)))
    this._ruleNames = Object.freeze(this._inner.rules)
    // The headers the rules and lists read may have changed.
    this._httpBinding = undefined
    return summary
  }

  /**
   * Replaces the `[auth]` section while serving: an object of the section's structure, or
   * `null` — said explicitly — to remove it. Anything else is a TypeError and changes nothing.
   */
  reloadAuth (auth) {
    if (auth !== null && (typeof auth !== 'object' || Array.isArray(auth))) {
      throw new TypeError(`reloadAuth(): auth must be an object (the [auth] section) or null to remove it, not ${describe(auth)}`)
    }
    call(() => this._inner.reloadAuthJson(auth === null ? null : JSON.stringify(auth)))
  }

  /** Picks an upstream of `service` for one call. */
  pick (service) {
    return new Lease(call(() => this._inner.pick(service)))
  }

  /** Every upstream of `service`: breaker state, load, call statistics. */
  upstreams (service) {
    return JSON.parse(call(() => this._inner.upstreamsJson(service))).map(camel)
  }

  /** Breaker state changes after sequence number `after` (0: all that are kept). */
  breakerEvents (after = 0) {
    return JSON.parse(call(() => this._inner.breakerEventsJson(after)))
  }

  /** Marks an upstream down (never picked) or up again. */
  setUpstreamDown (service, upstream, down = true) {
    call(() => this._inner.setUpstreamDown(service, upstream, down))
  }

  /** Closes an upstream's breaker and clears its window. */
  resetBreaker (service, upstream) {
    call(() => this._inner.resetBreaker(service, upstream))
  }

  /** Adds an upstream to a service while it serves. */
  addUpstream (service, url, options = {}) {
    call(() => this._inner.addUpstream(service, url, options.name, options.weight))
  }

  /** Removes an upstream from a service. */
  removeUpstream (service, upstream) {
    call(() => this._inner.removeUpstream(service, upstream))
  }

  /**
   * The monitoring report, a plain object with the JSON's snake_case keys (see `Report` in
   * index.d.ts): traffic per minute and its peaks, the most requested endpoints, rate-limit
   * breaches, refusals, upstream failures and breaker trips, responses by status class and
   * their latency. `options.nowMs` ends the per-minute series (default: the clock). Made for
   * a dashboard or a scrape, not per request: it merges the aggregate's shards (≈ 25 µs).
   */
  report (options) {
    if (options !== undefined && options !== null && typeof options !== 'object') {
      throw new TypeError('the options must be an object such as { nowMs }')
    }
    const nowMs = options ? options.nowMs : undefined
    if (nowMs !== undefined && nowMs !== null && typeof nowMs !== 'number') {
      throw new TypeError(`nowMs must be an integer from 0 to 2^53, not ${typeof nowMs}`)
    }
    return JSON.parse(call(() => this._inner.reportJson(nowMs)))
  }

  /** The monitoring counters and the upstreams' state in the Prometheus text format. */
  prometheus () {
    return this._inner.prometheus()
  }

  /**
   * Records how the server answered a request: `status` (an integer from 100 to 999) and
   * `latencyMs`, the time from the request's arrival to its answer (a number >= 0). The
   * path's query string is ignored. A bad argument is a TypeError. Cheap enough for every
   * request (≈ 0.15 µs).
   */
  recordResponse (method, path, status, latencyMs) {
    this._recordResponse(method, path, status, latencyMs)
  }

  /** The configured store: `memory`, `redis`, `redis_cluster` or `redis_sentinel`. */
  get storeKind () { return this._inner.storeKind }
  /** Whether a check may wait on the network (the store is Redis). */
  get mayWait () { return this._mayWait }
  /** The request headers some rule is keyed on (lower-cased): all a server needs to pass. */
  get keyHeaders () { return this._inner.keyHeaders }
  /** Whether some rule is keyed on the client address (`key = "ip"`). */
  get keysIp () { return this._inner.keysIp }
  /** Whether the engine has an `[auth]` section. */
  get hasAuth () { return this._inner.hasAuth }
  /** The shared store's last failure while it is failing, else null. */
  get storeFailure () { return this._inner.storeFailure }
  /** Where the store stands: `ok`, `degraded` or `failing`, since when and why. */
  get storeHealth () { return storeHealth(this._inner.storeHealth) }
  /** The rules' names, in configuration order. */
  get rules () { return this._ruleNames }
  /** Keys the memory store holds now. */
  get keyCount () { return this._inner.keyCount }
  /** Drops the memory store's expired keys now; answers how many. */
  purgeExpired () { return this._inner.purgeExpired() }
}

module.exports = {
  Engine,
  Decision,
  Identity,
  Lease,
  FloodwallError,
  ERROR_CODES,
  PROMETHEUS_CONTENT_TYPE: native.prometheusContentType(),
  version: native.version(),
  /** Internal: a native error as the error a user sees (for floodwall's own modules). */
  _convert: convert
}
