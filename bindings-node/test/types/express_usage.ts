// A typed usage of `floodwall/express`: `tsc --noEmit --strict` fails when express.d.ts and
// this example disagree (or when the `req.floodwall` augmentation stops reaching Express).
import express = require('express')
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { Agent } from 'node:http'
import { Engine } from '../../index'
import type { Decision, Identity } from '../../index'
import {
  PROBLEM_CONTENT_TYPE,
  authenticate,
  guard,
  metrics,
  proxy,
  rateLimit
} from '../../express'
import { proxy as sameProxy } from '../../proxy'
import type {
  FloodwallState,
  GuardOptions,
  ProblemBody,
  ProxyOptions,
  RateLimitOptions
} from '../../express'

const engine: Engine = Engine.fromFile('floodwall.toml')
const app = express()
app.set('trust proxy', 'loopback')

const options: GuardOptions = {
  skip: (req: Request) => req.method === 'OPTIONS',
  cost: (req) => (req.path === '/api/export' ? 10 : 1)
}
const guarding: RequestHandler = guard(engine, options)
app.use(guarding)

const limits: RateLimitOptions = { cost: () => 1 }
app.use('/v2', authenticate(engine, { skip: () => false }), rateLimit(engine, limits))

const proxied: ProxyOptions = { timeoutMs: 2_000, agent: new Agent({ keepAlive: true }), xForwarded: true, identityHeaders: true }
app.use('/same', sameProxy(engine, 'orders'))
app.use('/orders', proxy(engine, 'orders', proxied))
app.use('/plain', proxy(engine, 'orders', { path: (req) => req.url, preserveHost: true }))

const scrape: RequestHandler = metrics(engine)
app.get('/metrics', scrape)

app.get('/api/whoami', (req: Request, res: Response) => {
  const state: FloodwallState | undefined = req.floodwall
  const identity: Identity | null = state?.identity ?? null
  const decision: Decision | null = state?.decision ?? null
  const same: boolean = res.locals.floodwall === state
  const subject: string | null = identity?.subject ?? null
  const remaining: number | null = decision?.remaining ?? null
  res.json({ subject, remaining, same })
})

app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
  const body: ProblemBody = {
    type: 'about:blank',
    title: 'Internal Server Error',
    status: 502,
    detail: error instanceof Error ? error.message : 'failed',
    code: 'bad_gateway'
  }
  res.status(500).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body))
})

// @ts-expect-error: cost answers a number
guard(engine, { cost: () => 'one' })
// @ts-expect-error: public paths are the engine's [http] section, not an option
guard(engine, { publicPaths: ['/x'] })
// @ts-expect-error: metrics takes an engine
metrics()

engine.setAccessLists({ deny: { addresses: ['203.0.113.0/24'] }, allow: { subjects: ['ops-bot'] } })
const denied: string[] = engine.accessLists().deny.addresses
const names: string[] = engine.httpHeaders

export { denied, names }
