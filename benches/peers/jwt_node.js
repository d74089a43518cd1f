#!/usr/bin/env node
// Peer benchmark: JWT verification with node `jsonwebtoken` (exact version in
// package.json), on tokens from tests/fixtures/jwt/cases.json.
//
// Keys are parsed once up front (crypto.createSecretKey / createPublicKey
// KeyObjects), so each iteration measures jwt.verify alone: split + base64url
// + JSON parse + signature + alg/iss/aud/exp/nbf checks at the fixtures'
// fixed clock (clockTimestamp = cases.json "now", clockTolerance = leeway).
//
// Bounded: per alg, warm up for WARMUP_S, then measure until MEASURE_S or
// MAX_ITERS iterations, whichever comes first.
//
// Usage: (cd benches/peers && npm ci) && node benches/peers/jwt_node.js [measure_seconds]
// Output: one JSON line per alg on stdout; notes on stderr.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const jwt = require('jsonwebtoken');
const jwtVersion = require('jsonwebtoken/package.json').version;

const FIXTURES = path.resolve(__dirname, '../../tests/fixtures/jwt');
const WARMUP_S = 0.3;
const MEASURE_S = Number(process.argv[2] || 1.0);
const MAX_ITERS = 2_000_000;
const CHECK_EVERY = 256; // iterations between clock reads

// alg -> [case name in cases.json, kid in keys.json]
const BENCHES = [
  ['HS256', 'pyjwt_hs256_hmac_1', 'hmac-1'],
  ['RS256', 'pyjwt_rs256_rsa_1', 'rsa-1'],
  ['ES256', 'pyjwt_es256_ec256_1', 'ec256-1'],
  ['EdDSA', 'pyjwt_eddsa_ed_1', 'ed-1'],
];
// jsonwebtoken 9.0.3 (via jws 4 / jwa 2) only knows HS/RS/PS/ES 256-512 and
// "none"; jwt.verify rejects EdDSA, so that row is skipped.
const UNSUPPORTED = new Set(['EdDSA']);

const doc = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'cases.json'), 'utf8'));
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'keys.json'), 'utf8'));
const cfg = doc.config;

function keyObject(kid) {
  const entry = manifest.find((k) => k.kid === kid);
  if (entry.kind === 'hmac') return crypto.createSecretKey(Buffer.from(entry.secret, 'utf8'));
  return crypto.createPublicKey(fs.readFileSync(path.join(FIXTURES, entry.pem)));
}

const nowNs = () => process.hrtime.bigint();

function bench(alg, caseName, kid) {
  const c = doc.cases.find((x) => x.name === caseName);
  if (!c || !c.expect.ok) throw new Error(`no ok case ${caseName}`);
  const token = c.token;
  const key = keyObject(kid);
  const opts = {
    algorithms: [alg],
    issuer: cfg.issuers,
    audience: cfg.audiences,
    clockTimestamp: doc.now,
    clockTolerance: cfg.leeway_seconds,
  };
  // correctness once, outside the timing
  const claims = jwt.verify(token, key, opts);
  if (claims.sub !== c.expect.ok.subject || claims.tenant === undefined) {
    throw new Error(`${alg}: unexpected claims ${JSON.stringify(claims)}`);
  }

  let sink = 0;
  const warmEnd = nowNs() + BigInt(Math.round(WARMUP_S * 1e9));
  while (nowNs() < warmEnd) {
    for (let i = 0; i < CHECK_EVERY; i++) sink += jwt.verify(token, key, opts).exp & 1;
  }

  const budget = BigInt(Math.round(MEASURE_S * 1e9));
  const start = nowNs();
  let iters = 0;
  let elapsed = 0n;
  while (iters < MAX_ITERS) {
    const n = Math.min(CHECK_EVERY, MAX_ITERS - iters);
    for (let i = 0; i < n; i++) sink += jwt.verify(token, key, opts).exp & 1;
    iters += n;
    elapsed = nowNs() - start;
    if (elapsed >= budget) break;
  }
  if (sink < 0) console.error(sink); // keep the results alive
  return {
    peer: 'node-jsonwebtoken',
    alg,
    ns_per_op: Math.round(Number(elapsed) / iters),
    iters,
    version: jwtVersion,
    node: process.version,
  };
}

for (const [alg, caseName, kid] of BENCHES) {
  if (UNSUPPORTED.has(alg)) {
    console.error(`jwt_node: skipping ${alg}: jsonwebtoken ${jwtVersion} does not support it`);
    continue;
  }
  console.log(JSON.stringify(bench(alg, caseName, kid)));
}
