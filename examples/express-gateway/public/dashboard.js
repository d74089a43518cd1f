/* eslint-env browser */
/**
 * The gateway dashboard's script (served as is: no build step, no library). Every 2 s it
 * fetches /dashboard/data — the engine's report, each upstream's health, the latest breaker
 * changes — and redraws the page: totals, the per-minute traffic chart (hand-drawn SVG) with
 * its peak minutes marked, the top lists, the upstream table and the store. Text from the
 * data (subjects come from tokens) only ever goes in through `textContent`, never as markup.
 * One fetch at a time: the next is scheduled when the previous has been handled.
 */
(function () {
  'use strict'
  const POLL_MS = 2000
  const SERIES = ['requests', 'admitted', 'rate_limited', 'auth_rejected']

  const byId = (id) => document.getElementById(id)
  const count = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '–')
  const percent = (rate) => (typeof rate === 'number' ? `${(rate * 100).toFixed(1)} %` : '–')
  const hhmm = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' })
  const hhmmss = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' })
  const microseconds = (us) => {
    if (typeof us !== 'number' || us <= 0) return '–'
    return us >= 1000 ? `${(us / 1000).toFixed(us >= 100000 ? 0 : 1)} ms` : `${Math.round(us)} µs`
  }

  /** An element `tag` with `attributes` and children (strings become text nodes). */
  function h (tag, attributes, ...children) {
    const node = document.createElement(tag)
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value))
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)))
    return node
  }

  /** Replaces the rows of table `id`'s body; an empty list gets one row saying `empty`. */
  function fillTable (id, rows, empty = 'none yet') {
    const body = byId(id).tBodies[0]
    const columns = byId(id).tHead.rows[0].cells.length
    body.replaceChildren(...(rows.length > 0
      ? rows
      : [h('tr', { class: 'empty' }, h('td', { colspan: columns }, empty))]))
  }

  /** Rows of a top list (`[{ key, count, error }]`), `testid` on each row. */
  function topRows (entries, testid) {
    return (entries || []).map((entry) => h('tr', { 'data-testid': testid, 'data-key': entry.key },
      h('td', {}, entry.key),
      h('td', { class: 'num', title: entry.error > 0 ? `overcounted by at most ${entry.error}` : null },
        entry.error > 0 ? `${count(entry.count)} (±${count(entry.error)})` : count(entry.count))))
  }

  /** Rows of a `{ kind: count }` object, busiest first. */
  function kindRows (counts, testid) {
    return Object.entries(counts || {})
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([kind, n]) => h('tr', { 'data-testid': testid, 'data-key': kind }, h('td', {}, kind), h('td', { class: 'num' }, count(n))))
  }

  /**
   * Every minute of the horizon, oldest first, ending with the report's minute: the report's
   * counts where it has them, zero elsewhere (the report may leave out empty minutes).
   */
  function minuteSlots (report) {
    const known = new Map((report.per_minute || []).map((m) => [m.start_ms, m]))
    const horizon = Math.max(1, report.horizon_minutes || (report.per_minute || []).length || 1)
    const last = Math.floor(report.generated_at_ms / 60000) * 60000
    const slots = []
    for (let i = horizon - 1; i >= 0; i--) {
      const start = last - i * 60000
      slots.push(known.get(start) || { start_ms: start, requests: 0, admitted: 0, rate_limited: 0, auth_rejected: 0 })
    }
    // A minute the report has but the horizon above missed (a clock step): kept, in order.
    for (const m of report.per_minute || []) {
      if (m.start_ms < slots[0].start_ms || m.start_ms > last) slots.push(m)
    }
    return slots.sort((a, b) => a.start_ms - b.start_ms)
  }

  /** The chart's time range in minutes (the buttons above it), and the chart once drawn. */
  let rangeMinutes = 15
  let chart = null
  let chartSlots = []
  let chartPeaks = []

  const SERIES_STYLE = {
    requests: { label: 'requests', stroke: '#475569' },
    admitted: { label: 'admitted', stroke: '#16a34a' },
    rate_limited: { label: 'rate-limited', stroke: '#dc2626' },
    auth_rejected: { label: 'auth-rejected', stroke: '#d97706' }
  }

  /** Rings the peak minutes on the chart: one absolutely placed marker per peak in range. */
  function placePeaks (u) {
    const layer = u.over
    layer.querySelectorAll('[data-testid="peak-marker"]').forEach((m) => m.remove())
    const index = new Map(chartSlots.map((m, i) => [m.start_ms, i]))
    chartPeaks.forEach((peak, rank) => {
      if (!index.has(peak.start_ms)) return
      const left = u.valToPos(peak.start_ms / 1000, 'x')
      const top = u.valToPos(peak.requests, 'y')
      const marker = h('div', { class: 'peak-marker', 'data-testid': 'peak-marker', 'data-rank': rank + 1, 'data-start-ms': peak.start_ms,
        title: `peak #${rank + 1} at ${hhmm(peak.start_ms)}: ${count(peak.requests)} requests` }, `#${rank + 1}`)
      marker.style.left = `${left}px`
      marker.style.top = `${top}px`
      layer.append(marker)
    })
  }

  /** Draws the per-minute chart (uPlot) over the chosen range and marks the report's peaks. */
  function drawTraffic (report) {
    const all = minuteSlots(report)
    const slots = all.slice(-rangeMinutes)
    chartSlots = slots
    chartPeaks = report.peaks || []
    const data = [slots.map((m) => m.start_ms / 1000), ...SERIES.map((name) => slots.map((m) => m[name] || 0))]
    const container = byId('traffic-chart')
    const width = Math.max(320, container.clientWidth || 960)
    if (chart === null || chart.series.length !== SERIES.length + 1) {
      chart = new uPlot({
        width,
        height: 280,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(5, Math.ceil(max * 1.1))] } },
        axes: [{ stroke: '#64748b', grid: { stroke: '#e2e8f0' }, values: (u, splits) => splits.map((v) => hhmm(v * 1000)) }, { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, label: 'requests per minute', size: 60 }],
        series: [{ label: 'minute', value: (u, v) => (v === null ? '–' : hhmm(v * 1000)) },
          ...SERIES.map((name) => ({ label: SERIES_STYLE[name].label, stroke: SERIES_STYLE[name].stroke, width: 2, points: { show: false }, value: (u, v) => count(v) }))],
        hooks: { draw: [placePeaks] }
      }, data, container)
    } else {
      if (Math.abs(chart.width - width) > 4) chart.setSize({ width, height: 280 })
      chart.setData(data)
    }
    byId('horizon').textContent = `(last ${slots.length} of ${all.length} minutes)`
    for (const button of document.querySelectorAll('#traffic .range button')) {
      button.setAttribute('aria-pressed', String(Number(button.dataset.minutes) === rangeMinutes))
    }
    byId('peaks').replaceChildren(...(chartPeaks.length > 0
      ? chartPeaks.map((peak, rank) => h('li', { 'data-testid': 'peak-row', 'data-start-ms': peak.start_ms },
          `#${rank + 1} ${hhmm(peak.start_ms)}: ${count(peak.requests)} requests — ${count(peak.admitted)} admitted, ` +
          `${count(peak.rate_limited)} rate-limited, ${count(peak.auth_rejected)} auth-rejected, p99 ${microseconds(peak.latency_p99_us)}`))
      : [h('li', { class: 'empty' }, 'no traffic yet')]))
  }

  let hoursChart = null

  /** Sums `hours` (clock hours) by the viewer's hour of day: 24 counts of each series. */
  function byHourOfDay (hours) {
    const sums = { requests: new Array(24).fill(0), rate_limited: new Array(24).fill(0) }
    for (const hour of hours || []) {
      const of = new Date(hour.start_ms).getHours()
      sums.requests[of] += hour.requests || 0
      sums.rate_limited[of] += hour.rate_limited || 0
    }
    return sums
  }

  /** Draws requests and rate-limited by hour of day (uPlot bars) and names the busiest hour. */
  function drawHours (hours) {
    const sums = byHourOfDay(hours)
    const data = [Array.from({ length: 24 }, (_, i) => i), sums.requests, sums.rate_limited]
    const container = byId('hours-chart')
    const width = Math.max(320, container.clientWidth || 960)
    const hourLabel = (i) => `${String(i).padStart(2, '0')}:00`
    if (hoursChart === null) {
      const bars = uPlot.paths.bars({ size: [0.7, 40] })
      hoursChart = new uPlot({
        width,
        height: 200,
        scales: { x: { time: false, range: [-0.5, 23.5] }, y: { range: (u, min, max) => [0, Math.max(5, Math.ceil(max * 1.1))] } },
        axes: [{ stroke: '#64748b', grid: { show: false }, incrs: [1, 2, 3, 6], values: (u, splits) => splits.map(hourLabel) },
          { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, label: 'requests', size: 60 }],
        series: [{ label: 'hour', value: (u, v) => (v === null ? '–' : `${hourLabel(v)}–${hourLabel((v + 1) % 24)}`) },
          { label: 'requests', stroke: '#475569', fill: 'rgba(71, 85, 105, 0.35)', paths: bars, points: { show: false }, value: (u, v) => count(v) },
          { label: 'rate-limited', stroke: '#dc2626', fill: 'rgba(220, 38, 38, 0.45)', paths: bars, points: { show: false }, value: (u, v) => count(v) }]
      }, data, container)
    } else {
      if (Math.abs(hoursChart.width - width) > 4) hoursChart.setSize({ width, height: 200 })
      hoursChart.setData(data)
    }
    const busiest = sums.requests.reduce((best, n, i) => (n > sums.requests[best] ? i : best), 0)
    byId('busiest-hour').textContent = sums.requests[busiest] > 0
      ? `busiest: ${hourLabel(busiest)}–${hourLabel((busiest + 1) % 24)}, ${count(sums.requests[busiest])} requests (${count(sums.rate_limited[busiest])} rate-limited)`
      : 'no traffic yet'
  }

  function drawUpstreams (services) {
    const rows = []
    for (const [service, upstreams] of Object.entries(services || {})) {
      for (const u of upstreams) {
        const health = u.down ? 'no (marked down)' : u.state === 'closed' ? 'yes' : u.state === 'half_open' ? 'yes (probing)' : 'no'
        rows.push(h('tr', { 'data-testid': 'upstream-row', 'data-upstream': `${service}/${u.name}`, 'data-state': u.state, 'data-healthy': String(u.healthy) },
          h('td', {}, service),
          h('td', {}, u.name),
          h('td', { class: 'url' }, u.url),
          h('td', {}, h('span', { class: `badge state-${u.state}`, 'data-testid': 'upstream-state' },
            u.state === 'open' && u.openUntilMs ? `open until ${hhmmss(u.openUntilMs)}` : u.state.replace('_', '-'))),
          h('td', { class: u.healthy ? 'ok' : 'bad' }, health),
          h('td', { class: 'num' }, count(u.inFlight)),
          h('td', { class: 'num' }, count(u.calls)),
          h('td', { class: 'num' }, count(u.failures)),
          h('td', { class: 'num' }, count(u.timeouts)),
          h('td', { class: 'num' }, percent(u.failureRate)),
          h('td', { class: 'num' }, microseconds(u.meanLatencyUs))))
      }
    }
    fillTable('upstreams', rows, 'no services')
  }

  function drawBreakerEvents (events) {
    fillTable('breaker-events', (events || []).map((e) => h('tr', { 'data-testid': 'breaker-event-row', 'data-to': e.to },
      h('td', {}, hhmmss(e.atMs)),
      h('td', {}, `${e.service}/${e.upstream}`),
      h('td', {}, `${e.from.replace('_', '-')} → ${e.to.replace('_', '-')}`),
      h('td', { class: 'num' }, percent(e.failureRate)))), 'no breaker has changed state')
  }

  function drawStore (data) {
    const report = data.report
    const kind = data.store.kind || report.store_kind || 'unknown'
    byId('store-kind').textContent = kind
    byId('store-detail-kind').textContent = kind
    const health = data.store.health || { state: 'ok' }
    const failure = health.state === 'ok' ? null : (health.reason || data.store.failure || report.store_failure || 'failing')
    const failureNode = byId('store-failure')
    failureNode.hidden = !failure
    failureNode.textContent = failure
      ? `store ${health.state}${health.since_ms ? ` since ${new Date(health.since_ms).toLocaleTimeString()}` : ''}: ${failure}`
      : ''
    byId('report-source').textContent = report.source === 'stream' ? 'the Redis event stream' : 'this gateway\'s memory'
    const stores = Object.entries(report.stores || {}).filter(([, n]) => n > 0)
    byId('store-decisions').textContent = stores.length > 0 ? stores.map(([k, n]) => `${k} ${count(n)}`).join(', ') : 'none yet'
    const sink = report.sink
    byId('sink').textContent = sink
      ? `${sink.stream}: ${count(sink.written)} written, ${count(sink.queued)} queued, ${count(sink.dropped)} dropped, ${count(sink.errors)} errors${sink.last_error ? ` (last: ${sink.last_error})` : ''}`
      : 'off (memory store)'
  }

  let lastReport = null
  let lastHours = null

  function render (data) {
    const report = data.report
    lastReport = report
    const horizon = `last ${report.horizon_minutes} minutes`
    byId('totals-window').textContent = `totals over the ${horizon}`
    for (const label of document.querySelectorAll('.window')) label.textContent = horizon
    const totals = report.totals || {}
    byId('total-requests').textContent = count(totals.requests)
    byId('total-admitted').textContent = count(totals.admitted)
    byId('total-rate-limited').textContent = count(totals.rate_limited)
    byId('total-auth-rejected').textContent = count(totals.auth_rejected)
    byId('total-upstream-failures').textContent = count(totals.upstream_failures)
    byId('total-breaker-trips').textContent = count(totals.breaker_trips)
    byId('total-p99').textContent = microseconds(totals.latency_p99_us)
    drawTraffic(report)
    lastHours = data.hours || []
    drawHours(lastHours)
    fillTable('top-endpoints', topRows(report.top_endpoints, 'top-endpoint-row'))
    fillTable('top-subjects', topRows(report.top_subjects, 'top-subject-row'))
    fillTable('breaches-subject', topRows(report.breaches_by_subject, 'breach-row'))
    fillTable('blocked', (data.blocked || []).map((b) => h('tr', { 'data-testid': 'blocked-row', 'data-key': b.subject },
      h('td', {}, b.role ? `${b.subject} (${b.role})` : b.subject), h('td', {}, b.rule), h('td', { class: 'num' }, `${Math.ceil(b.blocked_for_ms / 1000)} s`))), 'nobody')
    fillTable('breaches-role', topRows(report.breaches_by_role, 'breach-row'))
    fillTable('breaches-endpoint', topRows(report.breaches_by_endpoint, 'breach-row'))
    fillTable('breaches-rule', topRows(report.breaches_by_rule, 'breach-row'))
    fillTable('breaker-trips', topRows(report.breaker_trips, 'breaker-trip-row'), 'no trips')
    fillTable('upstream-failures', topRows(report.upstream_failures, 'upstream-failure-row'), 'no failures')
    fillTable('auth-rejections', kindRows(report.auth_rejections, 'auth-rejection-row'), 'no rejections')
    fillTable('errors', kindRows(report.errors, 'error-row'), 'no errors')
    drawUpstreams(data.services)
    drawBreakerEvents(data.breaker_events)
    drawStore(data)
    const updated = byId('updated')
    updated.textContent = hhmmss(data.generated_at_ms)
    updated.setAttribute('datetime', new Date(data.generated_at_ms).toISOString())
  }

  function setStatus (text, ok) {
    const status = byId('status')
    status.textContent = text
    status.className = `status ${ok ? 'live' : 'error'}`
  }

  async function refresh () {
    try {
      const response = await fetch('/dashboard/data', { cache: 'no-store' })
      if (!response.ok) throw new Error(`/dashboard/data answered ${response.status}`)
      render(await response.json())
      setStatus('live', true)
    } catch (error) {
      setStatus(`not updating: ${error.message}`, false)
    } finally {
      setTimeout(refresh, POLL_MS)
    }
  }

  for (const button of document.querySelectorAll('#traffic .range button')) {
    button.addEventListener('click', () => {
      rangeMinutes = Number(button.dataset.minutes)
      if (lastReport !== null) drawTraffic(lastReport)
    })
  }
  window.addEventListener('resize', () => {
    if (lastReport !== null) drawTraffic(lastReport)
    if (lastHours !== null) drawHours(lastHours)
  })

  refresh()
})()
