'use strict'
/**
 * Traffic by hour, for the dashboard's "peak traffic by hour of day": the engine's report
 * holds the last `horizon` minutes (60 by default); this keeps what they add up to per clock
 * hour for as long as the gateway runs (the newest `maxHours`, a week by default), so the
 * page can show which hours of the day are the busy ones in the viewer's time zone.
 *
 * `fold(report)` adds the report's finished minutes that were not added before (a minute is
 * added once, when a later minute has begun); `hours(report)` answers every hour kept, plus
 * what the report's unfinished minutes add, oldest first:
 * `[{ start_ms, requests, admitted, rate_limited, auth_rejected }]`. The gateway folds every
 * minute on a timer, so nothing is lost while nobody looks, and whenever the page asks.
 */

const MINUTE_MS = 60_000
const HOUR_MS = 60 * MINUTE_MS
const COUNTS = ['requests', 'admitted', 'rate_limited', 'auth_rejected']

class HourlyTraffic {
  constructor ({ maxHours = 7 * 24 } = {}) {
    this.maxHours = maxHours
    /** Hour start (ms) → counts, of the minutes folded. */
    this.byHour = new Map()
    /** The start of the newest minute folded (-1: none yet). */
    this.foldedUpTo = -1
  }

  /** Adds the finished minutes of `report` not yet added. */
  fold (report) {
    const current = Math.floor(report.generated_at_ms / MINUTE_MS) * MINUTE_MS
    const minutes = (report.per_minute || []).filter((m) => m.start_ms < current && m.start_ms > this.foldedUpTo)
    for (const minute of minutes.sort((a, b) => a.start_ms - b.start_ms)) {
      add(this.byHour, minute)
      this.foldedUpTo = minute.start_ms
    }
    while (this.byHour.size > this.maxHours) {
      this.byHour.delete(Math.min(...this.byHour.keys()))
    }
  }

  /** Every hour kept and what `report`'s unfinished minutes add, oldest first. */
  hours (report) {
    this.fold(report)
    const byHour = new Map([...this.byHour].map(([start, counts]) => [start, { ...counts }]))
    for (const minute of report.per_minute || []) {
      if (minute.start_ms > this.foldedUpTo) add(byHour, minute)
    }
    return [...byHour.entries()].sort((a, b) => a[0] - b[0]).map(([start_ms, counts]) => ({ start_ms, ...counts }))
  }
}

/** Adds `minute`'s counts to its hour in `byHour`. */
function add (byHour, minute) {
  const start = Math.floor(minute.start_ms / HOUR_MS) * HOUR_MS
  let counts = byHour.get(start)
  if (counts === undefined) {
    counts = Object.fromEntries(COUNTS.map((name) => [name, 0]))
    byHour.set(start, counts)
  }
  for (const name of COUNTS) counts[name] += minute[name] || 0
}

module.exports = { HourlyTraffic }
