'use strict'
/**
 * Bearer tokens for the demo and the tests: a minimal HS256 JWT signer on node's crypto
 * (RFC 7519 compact form: base64url header, payload and HMAC-SHA256 signature), and the
 * sample callers the gateway prints on start. Signing only: verification is the engine's.
 */

const crypto = require('node:crypto')

/** The issuer and audience the gateway's `[auth]` section requires. */
const ISSUER = 'https://login.floodwall.example'
const AUDIENCE = 'floodwall-gateway'
/** How long the printed demo tokens stay valid. */
const DEMO_TOKEN_TTL_S = 24 * 60 * 60

/** The sample callers: one of each role, and the abusive one the load script drives. */
const CALLERS = {
  free: { subject: 'alice', role: 'free' },
  premium: { subject: 'bob', role: 'premium' },
  admin: { subject: 'root', role: 'admin' },
  abusive: { subject: 'mallory', role: 'free' }
}

const base64url = (value) => Buffer.from(value).toString('base64url')

/** A compact HS256 JWT of `payload` (an object of claims), signed with `secret`. */
function signHs256 (payload, secret) {
  const signingInput = `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(payload))}`
  const signature = crypto.createHmac('sha256', secret).update(signingInput).digest('base64url')
  return `${signingInput}.${signature}`
}

/**
 * A token the gateway accepts for `subject` with `role`: issuer, audience, `iat` and `exp`
 * (`ttlSeconds` after `nowS`, seconds since the epoch; the wall clock by default).
 */
function mintToken (secret, { subject, role, ttlSeconds = DEMO_TOKEN_TTL_S, nowS = Math.floor(Date.now() / 1000), claims = {} }) {
  const payload = { iss: ISSUER, aud: AUDIENCE, sub: subject, iat: nowS, exp: nowS + ttlSeconds, ...claims }
  if (role !== undefined && role !== null) payload.role = role
  return signHs256(payload, secret)
}

module.exports = { signHs256, mintToken, ISSUER, AUDIENCE, CALLERS, DEMO_TOKEN_TTL_S }
