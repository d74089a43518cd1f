/**
 * `floodwall/proxy`: a reverse proxy over a service's upstreams, picked by the engine behind
 * each upstream's circuit breaker (also exported by `floodwall/express`). See proxy.js.
 */

import type { RequestHandler } from 'express'
import type { Engine } from './index'
import type { ProxyOptions } from './express'

/** A handler that forwards requests to an upstream of `service` and streams the answer back. */
export declare function proxy (engine: Engine, service: string, options?: ProxyOptions): RequestHandler
