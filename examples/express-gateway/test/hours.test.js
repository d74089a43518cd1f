'use strict'
/**
 * lib/hours.js: the report's minutes added up per clock hour — each finished minute once,
 * the unfinished ones counted but not kept, the oldest hours let go past `maxHours`.
 */

const { test } = require('node:test')
const assert = require('node:assert/strict')

const { HourlyTraffic } = require('../lib/hours.js')

const HOUR = 3_600_000
const MINUTE = 60_000
const T0 = 1_796_540_400_000 // a whole hour
const minute = (start, requests, rateLimited = 0) => ({ start_ms: start, requests, admitted: requests - rateLimited, rate_limited: rateLimited, auth_rejected: 0 })
const report = (now, perMinute) => ({ generated_at_ms: now, per_minute: perMinute })

test('finished minutes are added once, unfinished ones only to the answer', () => {
  const hourly = new HourlyTraffic()
  const first = report(T0 + 2 * MINUTE + 5_000, [minute(T0, 10, 2), minute(T0 + MINUTE, 5), minute(T0 + 2 * MINUTE, 3)])
  assert.deepEqual(hourly.hours(first), [{ start_ms: T0, requests: 18, admitted: 16, rate_limited: 2, auth_rejected: 0 }])
  // The same report again, and a later one still holding those minutes: nothing counted twice.
  assert.equal(hourly.hours(first)[0].requests, 18)
  const later = report(T0 + 3 * MINUTE + 1_000, [minute(T0, 10, 2), minute(T0 + MINUTE, 5), minute(T0 + 2 * MINUTE, 4), minute(T0 + 3 * MINUTE, 1)])
  assert.equal(hourly.hours(later)[0].requests, 20)
  // Once the horizon has let those minutes go, the hour still holds the finished ones; the
  // minute that was unfinished then and never folded before it went is not (the gateway
  // folds every minute, well within the 60-minute horizon).
  const afterHorizon = report(T0 + HOUR + 30 * MINUTE, [minute(T0 + HOUR + 29 * MINUTE, 7)])
  assert.deepEqual(hourly.hours(afterHorizon).map((h) => [h.start_ms, h.requests]), [[T0, 19], [T0 + HOUR, 7]])
})

test('only the newest maxHours hours are kept', () => {
  const hourly = new HourlyTraffic({ maxHours: 2 })
  for (let h = 0; h < 4; h++) hourly.fold(report(T0 + (h + 1) * HOUR, [minute(T0 + h * HOUR, h + 1)]))
  assert.deepEqual(hourly.hours(report(T0 + 5 * HOUR, [])).map((h) => h.requests), [3, 4])
})
