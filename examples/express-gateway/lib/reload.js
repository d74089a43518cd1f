'use strict'
/**
 * Reloading the gateway's configuration file while it serves.
 *
 * The gateway built from a file (`GATEWAY_CONFIG`) reloads it on SIGHUP and whenever the file
 * changes: `engine.reloadFile(path)` puts the whole configuration in force at once — rules,
 * `[http]`, `[auth]`, services, the monitor's stream — while requests keep flowing. A rule
 * whose limits are unchanged keeps its counters, a changed one starts afresh, an unchanged
 * upstream keeps its breaker and in-flight count. A file that does not parse or does not
 * validate changes nothing: the configuration in force stays, and the error names the field.
 *
 * Decisions made here:
 *
 * - The file's directory is watched, not the file: editors save by writing a new file and
 *   renaming it over the old one, which ends a watch on the old file's inode.
 * - Change events are debounced (`debounceMs`, 200 ms by default): a save is often several
 *   events, and a half-written file read between them would be refused, then accepted.
 * - A change event whose file reads the same as the configuration in force is ignored (the
 *   editor touched it); SIGHUP always reloads, so an operator's signal always gets an answer
 *   in the log.
 * - A file that disappears (deleted, or between an editor's unlink and rename) is not an
 *   error of the configuration: it is logged, and the next change reloads.
 *
 * `last` holds the outcome of the latest attempt (`{ atMs, trigger, summary }` or
 * `{ atMs, trigger, error }`), `reloads` and `failures` count them; the dashboard's data
 * shows them.
 */

const fs = require('node:fs')
const path = require('node:path')

/** How long a burst of change events must be quiet before the file is read. */
const DEFAULT_DEBOUNCE_MS = 200

/** A summary's rules as `per-user restarted, global unchanged`. */
function describeRules (rules) {
  return rules.length === 0 ? 'no rules' : rules.map((r) => `${r.name} ${r.change}`).join(', ')
}

/** One line saying what `summary` (`engine.reloadFile`'s) changed. */
function describeSummary (summary) {
  const u = summary.upstreams
  return [
    `rules ${describeRules(summary.rules)}`,
    `upstreams kept ${u.kept}, started ${u.started}, removed ${u.removed}`,
    `auth ${summary.auth_changed ? 'changed' : 'unchanged'}`
  ].join('; ')
}

class ConfigReloader {
  /**
   * Reloads `file` into `engine`. `log` has `log` and `warn` (the console by default).
   * Nothing is watched until `watch()`.
   */
  constructor (engine, file, { log = console, debounceMs = DEFAULT_DEBOUNCE_MS } = {}) {
    this.engine = engine
    this.file = path.resolve(file)
    this.log = log
    this.debounceMs = debounceMs
    this.applied = readOrNull(this.file)
    this.last = null
    this.reloads = 0
    this.failures = 0
    this.watcher = null
    this.timer = null
  }

  /**
   * Reloads the file now; `trigger` says why in the log (`SIGHUP`, `file change`). Answers
   * the outcome (also kept as `last`). Never throws: a refused file is an outcome.
   */
  reload (trigger) {
    const atMs = Date.now()
    let text
    try {
      text = fs.readFileSync(this.file, 'utf8')
    } catch (error) {
      return this.failed(atMs, trigger, `cannot read ${this.file}: ${error.code || error.message}`)
    }
    try {
      // The file is read again by the engine: relative key paths in it resolve from its
      // directory, as at start.
      const summary = this.engine.reloadFile(this.file)
      this.applied = text
      this.reloads++
      this.last = { atMs, trigger, summary }
      this.log.log(`gateway: reloaded ${this.file} on ${trigger}: ${describeSummary(summary)}`)
      if (summary.auth_changed && !this.engine.hasAuth) {
        this.log.warn('gateway: the configuration has no [auth] section now: every /api request is answered 503 until it has one')
      }
      return this.last
    } catch (error) {
      return this.failed(atMs, trigger, error.message)
    }
  }

  failed (atMs, trigger, message) {
    this.failures++
    this.last = { atMs, trigger, error: message }
    this.log.warn(`gateway: reload of ${this.file} on ${trigger} refused, the configuration in force stays: ${message}`)
    return this.last
  }

  /** Watches the file's directory and reloads, debounced, when the file changes. */
  watch () {
    if (this.watcher !== null) return this
    const name = path.basename(this.file)
    this.watcher = fs.watch(path.dirname(this.file), { persistent: false }, (event, changed) => {
      // Some platforms give no name; then any change in the directory may be ours.
      if (changed !== null && changed !== name) return
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.changed(), this.debounceMs)
    })
    this.watcher.on('error', (error) => {
      this.log.warn(`gateway: stopped watching ${this.file}: ${error.message} (SIGHUP still reloads it)`)
      this.unwatch()
    })
    return this
  }

  changed () {
    this.timer = null
    const text = readOrNull(this.file)
    if (text === null) {
      this.log.warn(`gateway: ${this.file} is gone; the configuration in force stays until it is back`)
      return
    }
    if (text !== this.applied) this.reload('file change')
  }

  /** Stops watching (a pending reload is dropped). */
  unwatch () {
    clearTimeout(this.timer)
    this.timer = null
    if (this.watcher !== null) {
      this.watcher.close()
      this.watcher = null
    }
  }

  /** What the dashboard's data says of the configuration. */
  status () {
    return { file: this.file, reloads: this.reloads, failures: this.failures, last: this.last === null ? null : toSnake(this.last) }
  }
}

function toSnake ({ atMs, trigger, summary, error }) {
  return summary === undefined ? { at_ms: atMs, trigger, error } : { at_ms: atMs, trigger, summary }
}

function readOrNull (file) {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return null
  }
}

module.exports = { ConfigReloader, describeSummary, DEFAULT_DEBOUNCE_MS }
