'use strict'
/**
 * The gateway's engine configuration, built as an object (the same schema as
 * `examples/floodwall.toml`; `Engine.fromObject` takes it):
 *
 * - `[auth]`: HS256 bearer tokens from our issuer for our audience; the role comes from the
 *   `role` claim (`premium`, anything else is `free`); verified tokens are cached.
 * - `[[rules]]`, applied together to every `/api/**` request (all pass and consume, or none):
 *   `per-user`, a token bucket per subject whose `premium` override is twenty times larger
 *   and a hundred times faster, blocking a caller for 30 s after 50 denials, whose callers an
 *   admin may give limits of their own for a while; `order-writes`, a per-endpoint sliding window on
 *   `POST /api/orders` shared by every caller (premium too); `global`, one fixed window over
 *   the whole API.
 * - `[services]`: `orders` (round robin over orders-a and orders-b, the flaky one) and
 *   `catalog` (least connections over catalog-a and catalog-b), each upstream behind a
 *   circuit breaker that opens when half of its last 20 calls (at least 6) failed.
 * - `[store]`: memory by default; Redis when a URL is given, and then `[monitor]` writes the
 *   engine's events to a Redis stream as well.
 * - `[http]`: the gateway's own pages (`/health`, `/metrics`, the dashboard) are skipped —
 *   no token, no limit — and everything else needs a token.
 */

const { ISSUER, AUDIENCE } = require('./tokens.js')

/** The limits, by rule; `engineConfig({ limits })` overrides any of them (the tests do). */
const DEFAULT_LIMITS = Object.freeze({
  /** `per-user` for free callers: a burst of 20, then 10 a second. */
  free: Object.freeze({ capacity: 20, refill_rate: 10 }),
  /** `per-user` for premium callers: a burst of 400, then 1000 a second. */
  premium: Object.freeze({ capacity: 400, refill_rate: 1000 }),
  /** `order-writes`: 10 orders created in any 10 s, by everyone together. */
  orderWrites: Object.freeze({ limit: 10, window: '10s' }),
  /** `global`: 20 000 requests a second through the whole API. */
  global: Object.freeze({ limit: 20000, window: '1s' }),
  /** `per-user` blocks a caller for 30 s once it is denied 50 times within one refill time. */
  block: Object.freeze({ block_for: '30s', block_after: 50 })
})

/** The rules keyed by subject that block callers: the dashboard lists who they block. */
const BLOCKING_RULES = Object.freeze(['per-user'])
/**
 * The roles whose policies count apart in those rules (`roles.premium`), besides the default:
 * a premium caller's block is in the premium counter, so the dashboard asks under each.
 */
const BLOCKING_ROLES = Object.freeze([null, 'premium'])

/** Each service's balancing strategy. */
const STRATEGIES = Object.freeze({ orders: 'round_robin', catalog: 'least_connections' })

/** Every upstream's circuit breaker: open for 5 s at a failure rate of 50 % over the last 20 calls. */
const BREAKER = Object.freeze({ failure_rate: 0.5, min_calls: 6, window: 20, open_for: '5s', half_open_calls: 2 })

/** The gateway's own pages, which the HTTP layer leaves alone. */
const SKIP_PATHS = Object.freeze(['/health', '/metrics', '/dashboard/**'])

/** The Redis stream the engine's events go to when the store is Redis. */
const EVENT_STREAM = 'fw:events'

/**
 * The configuration object.
 *
 * - `secret`: the HS256 secret (at least 32 bytes).
 * - `upstreams`: `[{ service, name, port }]`, each at `http://127.0.0.1:PORT`.
 * - `redisUrl`: null for the memory store.
 * - `limits`: overrides of `DEFAULT_LIMITS`, by key.
 * - `redisPrefix`, `stream`: where in Redis (default `fw:` and `fw:events`).
 * - `breaker`: overrides of `BREAKER`.
 */
function engineConfig ({ secret, upstreams, redisUrl = null, limits = {}, redisPrefix = 'fw:', stream = EVENT_STREAM, breaker = {} }) {
  const l = { ...DEFAULT_LIMITS, ...limits }
  const services = {}
  for (const upstream of upstreams) {
    if (services[upstream.service] === undefined) {
      services[upstream.service] = {
        strategy: STRATEGIES[upstream.service] || 'round_robin',
        upstreams: [],
        breaker: { ...BREAKER, ...breaker }
      }
    }
    services[upstream.service].upstreams.push({ name: upstream.name, url: `http://127.0.0.1:${upstream.port}` })
  }
  const config = {
    store: redisUrl === null
      ? { kind: 'memory', max_keys: 100000 }
      : { kind: 'redis', url: redisUrl, prefix: redisPrefix },
    auth: {
      algorithms: ['HS256'],
      keys: [{ secret }],
      issuer: ISSUER,
      audience: AUDIENCE,
      role_claim: 'role',
      roles: ['premium', 'free', 'admin'],
      default_role: 'free',
      cache: { max_entries: 10000, ttl: '5m' }
    },
    rules: [
      {
        name: 'per-user',
        match: { paths: ['/api/**'] },
        key: 'subject',
        algorithm: 'token_bucket',
        capacity: l.free.capacity,
        refill_rate: l.free.refill_rate,
        block_for: l.block.block_for,
        block_after: l.block.block_after,
        key_limits: true,
        roles: { premium: { capacity: l.premium.capacity, refill_rate: l.premium.refill_rate } }
      },
      {
        name: 'order-writes',
        match: { methods: ['POST'], paths: ['/api/orders'] },
        key: 'endpoint',
        algorithm: 'sliding_window',
        limit: l.orderWrites.limit,
        window: l.orderWrites.window
      },
      {
        name: 'global',
        match: { paths: ['/api/**'] },
        key: 'global',
        algorithm: 'fixed_window',
        limit: l.global.limit,
        window: l.global.window
      }
    ],
    services,
    http: { skip_paths: SKIP_PATHS }
  }
  // The Redis Streams sink of the monitor: only with the Redis store (it writes to the
  // store's server). The section is added only then, so that the memory store's
  // configuration never depends on it.
  if (redisUrl !== null) config.monitor = { stream }
  return config
}

module.exports = { engineConfig, DEFAULT_LIMITS, BLOCKING_RULES, BLOCKING_ROLES, BREAKER, STRATEGIES, EVENT_STREAM, SKIP_PATHS }
