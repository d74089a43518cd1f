// A typed usage of the package: `tsc --noEmit` (make node-test) fails when index.d.ts and
// this example disagree.
import { Engine, FloodwallError, ERROR_CODES } from '../../index'
import type { CheckRequest, Decision, ErrorCode, UpstreamStatus } from '../../index'

const engine: Engine = Engine.fromObject({
  rules: [{ name: 'per-user', key: 'subject', algorithm: 'token_bucket', capacity: 10, refill_rate: 1 }]
})

const request: CheckRequest = { subject: 'alice', role: 'free', method: 'GET', path: '/api/orders', cost: 1 }
const decision: Decision = engine.checkSync(request)
const allowed: boolean = decision.allowed
const retry: number = decision.retryAfterMs
const limit: number | null = decision.limit
const reset: string | undefined = decision.headers['RateLimit-Reset']

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
void [allowed, retry, limit, reset, serve, codes, statuses]
