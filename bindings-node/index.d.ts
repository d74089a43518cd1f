/**
 * floodwall for Node: JWT authentication, layered rate limits by role, circuit breakers and
 * load balancing, decided by a Rust engine. See index.js for the guarantees (what runs off the
 * event loop, how errors look).
 */

import { EventEmitter } from 'events'

/** The error kinds' stable names, shared by every binding. */
export type ErrorCode =
  | 'invalid_config'
  | 'cost_exceeds_limit'
  | 'invalid_cost'
  | 'missing_token'
  | 'malformed_token'
  | 'token_too_large'
  | 'algorithm_not_allowed'
  | 'unknown_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'missing_claim'
  | 'invalid_claim'
  | 'no_upstream_available'
  | 'unknown_rule'
  | 'unknown_service'
  | 'unknown_upstream'
  | 'store_unavailable'

/** Every error code, in the core's order. */
export declare const ERROR_CODES: readonly ErrorCode[]

/** The core's version. */
export declare const version: string

/** The Content-Type of the Prometheus text format `Engine.prometheus` renders. */
export declare const PROMETHEUS_CONTENT_TYPE: 'text/plain; version=0.0.4; charset=utf-8'

/**
 * One minute's counters in a `Report` (in `totals`, everything's). Latencies are in
 * microseconds, the percentiles estimated from a histogram; 0 without responses.
 */
/** What `Engine.reload` did. */
export interface ReloadSummary {
  /** Every rule of the new configuration in its order, then the removed ones. */
  rules: Array<{ name: string, change: 'unchanged' | 'kept' | 'restarted' | 'added' | 'removed' }>
  /** Upstreams kept with their breakers, started afresh, and gone. */
  upstreams: { kept: number, started: number, removed: number }
  /** Whether the `[auth]` section changed. */
  auth_changed: boolean
  /** How many generations of rules the engine keeps. */
  generations: number
}

export interface MinuteCounts {
  /** The minute's start, in ms since the Unix epoch (0 in the totals). */
  start_ms: number
  /** Decisions taken: one per request the engine was asked about. */
  requests: number
  admitted: number
  rate_limited: number
  auth_rejected: number
  /** Decisions that failed, e.g. `store_unavailable`. */
  failed: number
  /** Requests a deny list refused (403). */
  denied: number
  /** Admitted requests a rule in shadow mode would have denied. */
  shadow_limited: number
  /** Admitted requests an allow list let skip the limits. */
  allowlisted: number
  /** Rate-limited requests whose key was blocked after denials (`block_for`). */
  blocked: number
  upstream_calls: number
  /** Upstream calls that failed or timed out. */
  upstream_failures: number
  breaker_trips: number
  /** Responses recorded (the HTTP layer records each; `recordResponse` a host's own). */
  responses: number
  /** … with a 4xx status. */
  client_errors: number
  /** … with a 5xx status. */
  server_errors: number
  latency_p50_us: number
  latency_p99_us: number
  mean_latency_us: number
  max_latency_us: number
}

/** One key of a report's top list. */
export interface TopEntry {
  key: string
  /** How many times it was counted (an upper bound). */
  count: number
  /** How much of `count` may belong to keys it replaced (0: exact). */
  error: number
}

/** The response-latency histogram of everything recorded. */
export interface LatencyHistogram {
  /** Upper bounds of the buckets (µs); a last, unbounded bucket follows. */
  bounds_us: number[]
  /** Responses per bucket (not cumulative): one more than `bounds_us`. */
  counts: number[]
  sum_us: number
  count: number
}

/** The Redis Streams sink's counters. */
export interface SinkStats {
  stream: string
  written: number
  /** Events dropped: the queue was full, or a batch could not be written. */
  dropped: number
  queued: number
  /** Batches that failed. */
  errors: number
  last_error: string | null
}

/**
 * What `Engine.report` answers: the monitoring report every binding gives, keys in
 * snake_case as in its JSON.
 */
export interface Report {
  generated_at_ms: number
  /** How many minutes `per_minute` covers. */
  horizon_minutes: number
  source: 'memory' | 'stream'
  store_kind: 'memory' | 'redis' | 'redis_cluster' | 'redis_sentinel' | null
  /** Why the shared store is failing now (decisions fall back); null when it is not. */
  store_failure: string | null
  /** Every minute of the horizon that saw traffic, oldest first. */
  per_minute: MinuteCounts[]
  /** The busiest minutes (by decisions, then responses), busiest first. */
  peaks: MinuteCounts[]
  /** Everything since the engine started. */
  totals: MinuteCounts
  /** The most requested endpoints, `METHOD /path`. */
  top_endpoints: TopEntry[]
  /** The callers (verified subjects) with the most decisions. */
  top_subjects: TopEntry[]
  breaches_by_subject: TopEntry[]
  breaches_by_role: TopEntry[]
  breaches_by_endpoint: TopEntry[]
  breaches_by_rule: TopEntry[]
  /** Admitted requests by the rule in shadow mode that would have denied them. */
  shadow_breaches_by_rule: TopEntry[]
  /** Refused tokens by error kind. */
  auth_rejections: Partial<Record<ErrorCode, number>>
  /** Failed decisions by error kind. */
  errors: Partial<Record<ErrorCode, number>>
  /** Failed or timed-out upstream calls by `service/upstream`. */
  upstream_failures: TopEntry[]
  /** Breaker trips by `service/upstream`. */
  breaker_trips: TopEntry[]
  /** Decisions by the store that made them. */
  stores: Partial<Record<StoreUsed, number>>
  /** Responses by status class (`2xx`, `4xx` …). */
  status_classes: Record<string, number>
  response_latency: LatencyHistogram
  /** The Redis Streams sink's counters; null without one. */
  sink: SinkStats | null
  /** What looks wrong with how the engine is set up, each once with how often it was seen. */
  warnings: Warning[]
}

/** Something that looks wrong with how an engine is set up, seen while serving. */
export interface Warning {
  /** A stable name, e.g. `untrusted_forwarded_header`. */
  code: string
  /** What it means and what to do. */
  message: string
  /** How many times it was seen. */
  count: number
  /** When it was first seen (ms since the Unix epoch). */
  first_seen_ms: number
}

/** One allow or deny list of the `[http]` section. */
export interface AccessList {
  /** Client addresses or networks (`192.0.2.7`, `10.0.0.0/8`, `2001:db8::/32`). */
  addresses?: string[]
  /** Verified subjects. */
  subjects?: string[]
  /** Roles of verified callers. */
  roles?: string[]
  /** Request header values by header name. */
  headers?: Record<string, string[]>
}

/** The allow list (skips every limit) and the deny list (answered 403). */
export interface AccessLists {
  allow?: AccessList
  deny?: AccessList
}

/** An error the engine reports. */
export declare class FloodwallError extends Error {
  /** The error kind's stable name. */
  readonly code: ErrorCode
  /** The HTTP status of the answer: 401 auth, 429 cost over a limit, 400 a cost that is no count, 503 anything the server cannot do now. */
  readonly status: number
  /** For `invalid_config`: the field at fault, e.g. `rules[1].window`. */
  readonly field: string | null
  /** For authentication rejections: the `WWW-Authenticate` value to send with the 401. */
  readonly wwwAuthenticate: string | null
  /** For `no_upstream_available`: when a breaker may let a call through again (ms since the epoch). */
  readonly availableAtMs: number | null
}

/** One request to decide on; every field is optional. */
export interface CheckRequest {
  /** The verified subject (rules keyed on `subject`). */
  subject?: string | null
  /** The caller's role: selects role overrides and role-restricted rules. */
  role?: string | null
  /** The HTTP method (default `GET`). */
  method?: string | null
  /** The request path (default `/`); a query string is ignored. */
  path?: string | null
  /** The client address (rules keyed on `ip`). */
  ip?: string | null
  /** Units taken from every matching limit (default 1; 0 peeks). An integer. */
  cost?: number | null
  /** Headers, for rules keyed on `header:NAME`. */
  headers?: Record<string, string> | null
  /** An explicit time in ms since the Unix epoch instead of the clock (tests, replays). */
  nowMs?: number | null
}

/** `CheckRequest` without the caller, which `authorize` takes from the token. */
export type AuthorizeRequest = Omit<CheckRequest, 'subject' | 'role'>

/** Which store decided. */
export type StoreUsed = 'memory' | 'redis' | 'fallback' | 'unavailable' | 'deny_cache'

/** One matched rule's part in a decision. */
export interface Layer {
  readonly rule: string
  readonly allowed: boolean
  readonly limit: number
  readonly remaining: number
  readonly resetAfterMs: number
  readonly retryAfterMs: number
}

/** The response headers a decision renders (as the configuration's `[headers]` asks). */
export interface RateLimitHeaders {
  'RateLimit-Policy'?: string
  RateLimit?: string
  'RateLimit-Limit'?: string
  'RateLimit-Remaining'?: string
  'RateLimit-Reset'?: string
  'Retry-After'?: string
}

/** Whose policy counts a key, and when the operation happens. */
export interface KeyOptions {
  /** The role whose policy counts the key (default: the rule's own). */
  role?: string | null
  /** An explicit time in ms since the Unix epoch (tests, replays); default: the engine's clock. */
  nowMs?: number | null
}

/** What a key of a rule has left (`engine.inspect`). */
export interface KeyStatus {
  readonly limit: number
  readonly remaining: number
  readonly resetAfterMs: number
  /** null when it is not blocked. */
  readonly blockedForMs: number | null
  /**
   * How much longer the key's own limit (`engine.setKeyLimit`) is in force; `limit` is that
   * limit meanwhile. null when it has none.
   */
  readonly keyLimitForMs: number | null
  readonly store: StoreUsed
}

/** Whether a request may pass, which rule decided, and the headers to send. */
export declare class Decision {
  private constructor ()
  readonly allowed: boolean
  readonly store: StoreUsed
  /** The deciding rule; null when no rule matched. */
  readonly rule: string | null
  readonly limit: number | null
  readonly remaining: number | null
  readonly resetAfterMs: number
  /** 0 when admitted. */
  readonly retryAfterMs: number
  /** Denied because its key is blocked (`block_for`): `retryAfterMs` is the block's end. */
  readonly blocked: boolean
  /** Holds places of `concurrency` rules until `release()` (or until collected). */
  readonly holds: boolean
  /** Gives back the places held of `concurrency` rules; settles `false` when it held none. */
  release (): Promise<boolean>
  /** A new object on every read. */
  readonly headers: RateLimitHeaders
  readonly layers: Layer[]
  toJSON (): {
    allowed: boolean
    rule: string | null
    limit: number | null
    remaining: number | null
    resetAfterMs: number
    retryAfterMs: number
    blocked: boolean
    store: StoreUsed
    headers: RateLimitHeaders
  }
}

/** A JSON value, as a token's claims hold them. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }

/** The caller a verified token names. */
export declare class Identity {
  private constructor ()
  readonly subject: string
  readonly role: string | null
  readonly keyId: string | null
  readonly algorithm: string
  readonly expiresAtMs: number | null
  /** Every claim (a new object on every read). */
  readonly claims: Record<string, JsonValue>
  /** One claim by dotted path; undefined when absent. */
  claim (path: string): JsonValue | undefined
}

/** What `authorize` answers. */
export interface Authorized {
  identity: Identity
  decision: Decision
}

/** How an upstream call ended. */
export type CallOutcome = 'success' | 'failure' | 'timeout'

/** One call in progress on a picked upstream; finish it exactly once. */
export declare class Lease {
  private constructor ()
  readonly service: string
  readonly upstream: string
  readonly url: string
  readonly isProbe: boolean
  readonly finished: boolean
  /** Latency in ms; by default the time since the pick. Throws when already finished. */
  finish (outcome: CallOutcome, latencyMs?: number): void
}

/** A breaker's state. */
export type BreakerState = 'closed' | 'open' | 'half_open'

/** `engine.storeHealth`, and the `storeHealth` event's first argument. */
export interface StoreHealth {
  state: 'ok' | 'degraded' | 'failing'
  sinceMs: number
  reason: string | null
  reasonKind: 'timeout' | 'refused' | 'out_of_memory' | 'noscript' | 'cluster_down' | 'error' | null
}

/** One upstream of a service at the time asked. */
export interface UpstreamStatus {
  name: string
  url: string
  weight: number
  down: boolean
  state: BreakerState
  openUntilMs: number | null
  inFlight: number
  failureRate: number
  slowCallRate: number
  calls: number
  successes: number
  failures: number
  timeouts: number
  meanLatencyUs: number
  maxLatencyUs: number
}

/** A breaker's change of state. */
export interface BreakerEvent {
  seq: number
  service: string
  upstream: string
  from: BreakerState
  to: BreakerState
  atMs: number
  failureRate: number
  slowCallRate: number
}

/** The configuration's structure (TOML schema); see the repository's README. */
export type Config = Record<string, unknown>

/**
 * The traffic-control engine. On Redis it emits `storeHealth` at each transition of the
 * store's health.
 */
export declare class Engine extends EventEmitter {
  private constructor ()
  on (event: 'storeHealth', listener: (health: StoreHealth, message: string) => void): this
  once (event: 'storeHealth', listener: (health: StoreHealth, message: string) => void): this
  off (event: 'storeHealth', listener: (health: StoreHealth, message: string) => void): this
  static fromToml (text: string): Engine
  static fromJson (text: string): Engine
  static fromFile (path: string): Engine
  static fromObject (config: Config): Engine

  /** Memory stores only (throws on Redis rather than block the event loop). */
  checkSync (request?: CheckRequest): Decision
  check (request?: CheckRequest): Promise<Decision>
  /**
   * `check`, waiting up to `maxWaitMs` for capacity (first come, first served among this
   * engine's waiters): the admission, or the last denial. Decides on the engine's clock.
   */
  acquire (request: CheckRequest | undefined, maxWaitMs: number): Promise<Decision>
  /** What a key of a rule has left now; consumes nothing. `null` key: requests lacking it. */
  inspect (rule: string, key: string | null, options?: KeyOptions): Promise<KeyStatus>
  /** Starts a key afresh: what it counted and its block are forgotten. */
  resetKey (rule: string, key: string | null, options?: KeyOptions): Promise<void>
  /** Blocks a key for `durationMs` (a rule with `block_for`). */
  blockKey (rule: string, key: string | null, durationMs: number, options?: KeyOptions): Promise<void>
  /** Takes `points` from a key now, as requests would. */
  penalize (rule: string, key: string | null, points: number, options?: KeyOptions): Promise<void>
  /** Gives `points` back to a key now. */
  reward (rule: string, key: string | null, points: number, options?: KeyOptions): Promise<void>
  /**
   * Judges a key by its own `limit` (a token bucket's capacity) for `lifetimeMs` (1 ms to 366
   * days), replacing any own limit it had (a rule with `key_limits = true`).
   */
  setKeyLimit (rule: string, key: string | null, limit: number, lifetimeMs: number, options?: KeyOptions): Promise<void>
  /** Takes a key's own limit away: its policy's applies again (a rule with `key_limits = true`). */
  clearKeyLimit (rule: string, key: string | null, options?: KeyOptions): Promise<void>
  /** Memory stores only. */
  checkManySync (requests: Iterable<CheckRequest>): Array<Decision | FloodwallError>
  checkMany (requests: Iterable<CheckRequest>): Promise<Array<Decision | FloodwallError>>

  authenticate (authorization: string, options?: { nowMs?: number }): Identity
  /** Memory stores only. */
  authorizeSync (authorization: string, request?: AuthorizeRequest): Authorized
  authorize (authorization: string, request?: AuthorizeRequest): Promise<Authorized>
  /** Puts a whole new configuration in force while serving; on error nothing changes. */
  reload (config: Config): ReloadSummary
  reloadToml (text: string): ReloadSummary
  reloadJson (text: string): ReloadSummary
  reloadFile (path: string): ReloadSummary
  /** An object of the `[auth]` section's structure, or `null` to remove it; anything else is a TypeError. */
  reloadAuth (auth: Config | null): void
  /** The allow and deny lists in force. */
  accessLists (): { allow: Required<AccessList>, deny: Required<AccessList> }
  /** Replaces the allow and deny lists while serving; a bad entry is a FloodwallError naming it. */
  setAccessLists (lists: AccessLists): void
  /** The request headers the HTTP layer reads (lower-cased): all a middleware hands over. */
  readonly httpHeaders: string[]

  pick (service: string): Lease
  upstreams (service: string): UpstreamStatus[]
  breakerEvents (after?: number): BreakerEvent[]
  setUpstreamDown (service: string, upstream: string, down?: boolean): void
  resetBreaker (service: string, upstream: string): void
  addUpstream (service: string, url: string, options?: { name?: string, weight?: number }): void
  removeUpstream (service: string, upstream: string): void

  /** The monitoring report; `nowMs` ends the per-minute series (default: the clock). */
  report (options?: { nowMs?: number }): Report
  /** The monitoring counters and the upstreams' state as Prometheus text. */
  prometheus (): string
  /**
   * Records how the server answered a request: `status` 100 to 999, `latencyMs` from the
   * request's arrival (>= 0). The Express middlewares record every response themselves.
   */
  recordResponse (method: string, path: string, status: number, latencyMs: number): void

  readonly storeKind: 'memory' | 'redis' | 'redis_cluster' | 'redis_sentinel'
  readonly mayWait: boolean
  readonly hasAuth: boolean
  /** Whether some rule is keyed on the client address (`key = "ip"`). */
  readonly keysIp: boolean
  /** The request headers some rule is keyed on (lower-cased): all a server needs to pass. */
  readonly keyHeaders: string[]
  readonly storeFailure: string | null
  /**
   * Where the store stands: `ok`; `degraded` while Redis is failing and the in-process
   * fallback decides; `failing` while it is failing and `on_error` answers alone. Since when
   * (ms since the Unix epoch) and why.
   */
  readonly storeHealth: StoreHealth
  readonly rules: readonly string[]
  readonly keyCount: number
  purgeExpired (): number
}
