'use strict'
/**
 * `FloodwallError` and how the addon's failures become one: `convert` turns a native error
 * (its message carries the code and fields) into a `FloodwallError`, or into the `TypeError`
 * or `RangeError` of a bad argument; `call` runs a native call under it. Part of the
 * `floodwall` package; `index.js` exports what users see.
 */

class FloodwallError extends Error {
  constructor (message, { code, status, field = null, wwwAuthenticate = null, availableAtMs = null }) {
    super(message)
    this.name = 'FloodwallError'
    /** The error kind's stable name (`expired`, `invalid_config` …). */
    this.code = code
    /** The HTTP status a server should answer with. */
    this.status = status
    /** For `invalid_config`: the field at fault, e.g. `rules[1].window`. */
    this.field = field
    /** For authentication rejections: the `WWW-Authenticate` value to send with the 401. */
    this.wwwAuthenticate = wwwAuthenticate
    /** For `no_upstream_available`: when a breaker may let a call through again (ms). */
    this.availableAtMs = availableAtMs
  }
}

/** A native error as the error a user sees. */
function convert (error) {
  if (!(error instanceof Error)) return error
  // napi-rs's argument conversions: InvalidArg, StringExpected, NumberExpected, ObjectExpected …
  if (typeof error.code === 'string' && (error.code === 'InvalidArg' || error.code.endsWith('Expected'))) {
    return new TypeError(error.message)
  }
  if (typeof error.message === 'string' && error.message.startsWith('{"')) {
    let details
    try {
      details = JSON.parse(error.message)
    } catch {
      return error
    }
    if (details && details.floodwall === true) return new FloodwallError(details.message, details)
  }
  return error
}

function describe (value) {
  if (value === undefined) return 'undefined'
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`
  if (typeof value === 'object') return `an object (${(value.constructor && value.constructor.name) || 'Object'})`
  return `${typeof value} ${String(value)}`
}

function call (fn) {
  try {
    return fn()
  } catch (error) {
    throw convert(error)
  }
}

module.exports = { FloodwallError, convert, describe, call }
