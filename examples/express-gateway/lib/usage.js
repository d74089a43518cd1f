'use strict'
/**
 * What the gateway prints when it starts: where it listens, which store and secret it uses,
 * a token for a free and for a premium caller, ready `curl` lines for every route, the
 * command that floods the gateway until each caller is limited (flood.js), the dashboard
 * and the metrics.
 */

const { mintToken, CALLERS, DEMO_TOKEN_TTL_S } = require('./tokens.js')

/** Single-quotes `text` for a POSIX shell. */
const shellQuote = (text) => `'${String(text).replace(/'/g, "'\\''")}'`

/**
 * The text, for a gateway at `url` (e.g. `http://127.0.0.1:8080`) run with `settings`
 * (lib/settings.js) on an engine whose store is `storeKind`.
 */
function usageText ({ url, settings, storeKind }) {
  const free = mintToken(settings.secret, CALLERS.free)
  const premium = mintToken(settings.secret, CALLERS.premium)
  const admin = mintToken(settings.secret, CALLERS.admin)
  const q = (path) => shellQuote(url + path)
  const freeAuth = '-H "Authorization: Bearer $FREE_TOKEN"'
  const premiumAuth = '-H "Authorization: Bearer $PREMIUM_TOKEN"'
  const adminAuth = '-H "Authorization: Bearer $ADMIN_TOKEN"'
  const store = settings.configFile
    ? `${storeKind} (as the configuration file says)`
    : storeKind === 'memory'
    ? 'memory (in this process; set REDIS_URL to share limits through Redis)'
    : `${storeKind} at ${settings.redisUrl}, events streamed to Redis`
  const secret = settings.secretIsDemo
    ? 'the fixed DEMO secret (public: set JWT_SECRET to a secret of your own, 32 bytes or more)'
    : 'from JWT_SECRET'
  return [
    `floodwall express gateway on ${url}`,
    `  store:       ${store}`,
    `  JWT secret:  ${secret}`,
    `  upstreams:   ${settings.upstreams.map((u) => `${u.name} :${u.port}${u.flaky ? ' (flaky)' : ''}`).join(', ')}`,
    settings.configFile
      ? `  config:      ${settings.configFile}, reloaded on SIGHUP and when it changes`
      : '  config:      from the environment (node gateway.js --print-config > gw.json; GATEWAY_CONFIG=gw.json reloads it live)',
    '',
    `Sample tokens (HS256, valid ${DEMO_TOKEN_TTL_S / 3600} h): paste these into your shell`,
    `  export FREE_TOKEN=${free}      # sub=${CALLERS.free.subject}, role=free`,
    `  export PREMIUM_TOKEN=${premium}   # sub=${CALLERS.premium.subject}, role=premium`,
    `  export ADMIN_TOKEN=${admin}     # sub=${CALLERS.admin.subject}, role=admin (key administration)`,
    '',
    'Try:',
    `  curl -i ${q('/api/orders')}                                      # 401: no token`,
    `  curl -i ${freeAuth} ${q('/api/orders')}          # 200 from orders-a or orders-b`,
    `  curl -i ${premiumAuth} ${q('/api/orders/2')}`,
    `  curl -i ${freeAuth} ${q('/api/catalog')}`,
    `  curl -i ${premiumAuth} ${q('/api/catalog/esp-100')}`,
    `  curl -i ${freeAuth} -H 'Content-Type: application/json' -d '{"item":"beans"}' ${q('/api/orders')}   # 10 per 10 s for everyone`,
    `  make flood URL=${url}   # floods as ${CALLERS.free.subject} (free), then ${CALLERS.premium.subject} (premium), each until limited; watch the dashboard`,
    `  for i in $(seq 20); do curl -s -o /dev/null -w '%{http_code} ' ${premiumAuth} ${q('/api/orders?fail=1')}; done; echo   # orders-b fails, its breaker opens`,
    `  curl -s ${adminAuth} ${q('/admin/keys/per-user/' + CALLERS.free.subject)}; echo   # what the free caller has left`,
    `  curl -i -X DELETE ${adminAuth} ${q('/admin/keys/per-user/' + CALLERS.free.subject)}   # start it afresh`,
    '',
    `Dashboard:  ${url}/dashboard`,
    `Metrics:    ${url}/metrics`,
    `Health:     ${url}/health`
  ].join('\n')
}

module.exports = { usageText, shellQuote }
