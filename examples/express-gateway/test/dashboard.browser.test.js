'use strict'
/**
 * The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
 * `make gateway-test` installs it when missing, and this test fails, never skips, without
 * it). After real traffic through the gateway — admitted, rate-limited, refused for want of a
 * token, and enough failures on orders-b to open its breaker — the page must show what
 * happened: the top endpoint, the breaches by role, a peak marker on the chart, orders-b's
 * open breaker and the store; and it must update by itself when more traffic comes. It leaves
 * a screenshot in target/artifacts/dashboard.png.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { chromium } = require('playwright-core')

const { startStack, request, ARTIFACTS } = require('./helpers.js')

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
/** A bound on each wait for the page (not an assertion: the page polls every 2 s). */
const PAGE_BOUND_MS = 15_000

const LIMITS = {
  free: { capacity: 5, refill_rate: 0.01 },
  premium: { capacity: 200, refill_rate: 0.01 }
}

test('the dashboard shows the traffic, the top endpoint, a peak, the open breaker and the store, and refreshes', async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (make gateway-test does)`)
  const stack = await startStack({ limits: LIMITS })
  t.after(() => stack.close())
  const free = stack.token('alice', 'free')
  const premium = stack.token('bob', 'premium')
  for (let i = 0; i < 12; i++) await request(`${stack.url}/api/orders/${1 + (i % 3)}`, { token: free }) // 5 admitted, 7 limited
  for (let i = 0; i < 6; i++) await request(`${stack.url}/api/catalog`, { token: premium })
  for (let i = 0; i < 3; i++) await request(`${stack.url}/api/catalog`) // no token
  for (let i = 0; i < 20; i++) await request(`${stack.url}/api/orders?fail=1`, { token: premium })

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  t.after(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  const problems = []
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
  page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`) })
  await page.goto(`${stack.url}/dashboard`)

  await page.waitForSelector('[data-testid="top-endpoint-row"]', { timeout: PAGE_BOUND_MS })
  assert.equal(await page.textContent('[data-testid="status"]'), 'live')
  const topEndpoint = await page.locator('#top-endpoints [data-testid="top-endpoint-row"] td').first().textContent()
  assert.equal(topEndpoint, 'GET /api/orders')

  const peaks = page.locator('#traffic-chart [data-testid="peak-marker"]')
  assert.ok(await peaks.count() >= 1)
  assert.equal(await peaks.first().getAttribute('data-rank'), '1')
  assert.match(await page.locator('[data-testid="peak-row"]').first().textContent(), /^#1 \d\d:\d\d: \d+ requests/)

  // The chart is uPlot's (served from the package), over the chosen range; every count says its window.
  assert.ok(await page.locator('#traffic-chart canvas').count() >= 1)
  assert.match(await page.textContent('[data-testid="horizon"]'), /^\(last 15 of \d+ minutes\)$/)
  await page.click('#traffic .range button[data-minutes="5"]')
  assert.match(await page.textContent('[data-testid="horizon"]'), /^\(last 5 of \d+ minutes\)$/)
  assert.equal(await page.getAttribute('#traffic .range button[data-minutes="5"]', 'aria-pressed'), 'true')
  assert.ok(await peaks.count() >= 1, 'the peak minute is within the last 5 minutes')
  await page.click('#traffic .range button[data-minutes="15"]')
  assert.match(await page.textContent('[data-testid="totals-window"]'), /^totals over the last \d+ minutes$/)
  assert.match(await page.locator('#top-endpoints').locator('xpath=..').locator('h2 .window').textContent(), /^last \d+ minutes$/)
  // Peak hours of the day: this hour holds every request so far.
  assert.ok(await page.locator('#hours-chart canvas').count() >= 1)
  assert.match(await page.textContent('[data-testid="busiest-hour"]'), /^busiest: \d\d:00–\d\d:00, \d+ requests \(\d+ rate-limited\)$/)
  // Upstream health comes before the traffic chart (above the fold).
  const [upstreamsTop, chartTop] = await page.evaluate(() => [document.getElementById('upstreams').getBoundingClientRect().top, document.getElementById('traffic-chart').getBoundingClientRect().top])
  assert.ok(upstreamsTop < chartTop && upstreamsTop < 900, `${upstreamsTop} ${chartTop}`)

  assert.equal(await page.textContent('[data-testid="store-kind"]'), 'memory')
  assert.equal(await page.locator('#breaches-role [data-testid="breach-row"] td').first().textContent(), 'free')
  assert.equal(await page.locator('#breaches-subject [data-testid="breach-row"] td').first().textContent(), 'alice')
  assert.equal(await page.getAttribute('[data-upstream="orders/orders-b"]', 'data-state'), 'open')
  assert.equal(await page.getAttribute('[data-upstream="orders/orders-a"]', 'data-state'), 'closed')
  assert.equal(await page.locator('#breaker-trips [data-testid="breaker-trip-row"] td').first().textContent(), 'orders/orders-b')
  assert.equal(await page.textContent('[data-testid="total-auth-rejected"]'), '3')
  assert.equal(await page.textContent('[data-testid="total-rate-limited"]'), '7')

  // Live: more traffic shows up without a reload.
  const before = Number((await page.textContent('[data-testid="total-requests"]')).replace(/,/g, ''))
  for (let i = 0; i < 4; i++) await request(`${stack.url}/api/catalog/esp-100`, { token: premium })
  await page.waitForFunction((expected) => Number(document.querySelector('[data-testid="total-requests"]').textContent.replace(/,/g, '')) >= expected,
    before + 4, { timeout: PAGE_BOUND_MS })

  fs.mkdirSync(ARTIFACTS, { recursive: true })
  const screenshot = path.join(ARTIFACTS, 'dashboard.png')
  await page.screenshot({ path: screenshot, fullPage: true })
  assert.ok(fs.statSync(screenshot).size > 10_000)
  assert.deepEqual(problems, [])
})
