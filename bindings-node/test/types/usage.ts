// A typed usage of the package: `tsc --noEmit` (make node-test) fails when index.d.ts and
// this example disagree.
import { Engine, FloodwallError, ERROR_CODES, PROMETHEUS_CONTENT_TYPE } from '../../index'
import type {
  CheckRequest, Decision, ErrorCode, KeyStatus, LatencyHistogram, MinuteCounts, Report, SinkStats, StoreHealth,
  TopEntry, UpstreamStatus
} from '../../index'

const engine: Engine = Engine.fromObject({
  rules: [{ name: 'per-user', key: 'subject', algorithm: 'token_bucket', capacity: 10, refill_rate: 1, key_limits: true }]
})

const request: CheckRequest = { subject: 'alice', role: 'free', method: 'GET', path: '/api/orders', cost: 1 }
const decision: Decision = engine.checkSync(request)
const allowed: boolean = decision.allowed
const retry: number = decision.retryAfterMs
const limit: number | null = decision.limit
const reset: string | undefined = decision.headers['RateLimit-Reset']
const blocked: boolean = decision.blocked

// Waiting for capacity, and places of concurrency rules held until released.
async function waitForCapacity (): Promise<boolean> {
  const waited: Decision = await engine.acquire(request, 250)
  const held: boolean = waited.holds
  const released: boolean = await waited.release()
  return held && released
}

// Per-key administration.
async function administer (): Promise<number | null> {
  const status: KeyStatus = await engine.inspect('per-user', 'alice', { role: 'premium' })
  await engine.penalize('per-user', 'alice', 2)
  await engine.reward('per-user', null, 1)
  await engine.blockKey('per-user', 'alice', 60_000)
  await engine.resetKey('per-user', 'alice')
  await engine.setKeyLimit('per-user', 'alice', 50, 3_600_000, { role: 'premium' })
  const own: number | null = (await engine.inspect('per-user', 'alice')).keyLimitForMs
  await engine.clearKeyLimit('per-user', 'alice')
  return status.blockedForMs ?? own
}

async function serve (authorization: string): Promise<number> {
  try {
    const { identity, decision } = await engine.authorize(authorization, { method: 'GET', path: '/' })
    const subject: string = identity.subject
    return decision.allowed && subject.length > 0 ? 200 : 429
  } catch (error) {
    if (error instanceof FloodwallError) {
      const code: ErrorCode = error.code
      return code === 'expired' ? 401 : error.status
    }
    throw error
  }
}

const codes: readonly ErrorCode[] = ERROR_CODES
const statuses: UpstreamStatus[] = []

// Monitoring: a response recorded, the report read, the Prometheus text served.
engine.recordResponse('GET', '/api/orders', 200, 1.25)
const report: Report = engine.report({ nowMs: Date.now() })
const totals: MinuteCounts = report.totals
const served: number = totals.responses + totals.client_errors + totals.server_errors
const p99: number = report.per_minute.length > 0 ? report.per_minute[0].latency_p99_us : 0
const top: TopEntry | undefined = report.top_endpoints[0]
const busiest: string | null = top !== undefined && top.error === 0 ? top.key : null
const expired: number | undefined = report.auth_rejections.expired
const fromMemory: number | undefined = report.stores.memory
const histogram: LatencyHistogram = report.response_latency
const buckets: number = histogram.counts.length - histogram.bounds_us.length
const sink: SinkStats | null = report.sink
const dropped: number = sink === null ? 0 : sink.dropped
const source: 'memory' | 'stream' = report.source
const text: string = engine.prometheus()
const contentType: 'text/plain; version=0.0.4; charset=utf-8' = PROMETHEUS_CONTENT_TYPE
void [allowed, retry, limit, reset, blocked, waitForCapacity, administer, serve, codes, statuses]
void [served, p99, busiest, expired, fromMemory, buckets, dropped, source, text, contentType]

// @ts-expect-error: a status is a number
engine.recordResponse('GET', '/', '200', 1)
// @ts-expect-error: the report's keys are snake_case, as in its JSON
void report.totals.rateLimited

const health: StoreHealth = engine.storeHealth
const degraded: boolean = health.state === 'degraded'
engine.on('storeHealth', (h: StoreHealth, message: string) => {
  void [h.reasonKind, message.length, degraded]
})
// @ts-expect-error: a state is one of three words
const state: 'up' = health.state
void state
