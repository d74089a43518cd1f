'use strict'
/**
 * `make demo`: starts the four sample upstreams (upstream.js) and the gateway (gateway.js),
 * each as a child process of this one, and stops them all when it is told to stop.
 *
 * - Settings from the environment (lib/settings.js): GATEWAY_PORT (8080), UPSTREAM_PORTS
 *   (9001-9004), REDIS_URL, JWT_SECRET, FLAKY_FAILURE_RATE. A bad value stops it before
 *   anything starts.
 * - The upstreams start first; the gateway starts once every one of them listens, and prints
 *   how to call it (tokens, curl lines, the dashboard and metrics URLs).
 * - Ctrl-C (SIGINT), SIGTERM or SIGHUP stops every child: SIGTERM, then SIGKILL for any still
 *   running after 5 s; it exits once all have exited. If a child dies on its own, the others
 *   are stopped too and it exits with status 1. The children watch their IPC channel to it,
 *   so that even a SIGKILL of this process takes them down; and if the process that started
 *   this one (make) goes away, this one stops as well.
 * - `--cpu-prof DIR` runs the gateway under `node --cpu-prof`, writing its profile to DIR
 *   when it stops (load.js uses it).
 */

const { fork } = require('node:child_process')
const path = require('node:path')

const { settingsEnv, startup, SettingsError } = require('./lib/settings.js')

/** How long a child has to report that it listens. */
const START_TIMEOUT_MS = 15_000
/** How long children have to exit after SIGTERM before they are killed. */
const STOP_TIMEOUT_MS = 5_000
/** How often the parent process is looked for. */
const PARENT_CHECK_MS = 1_000

const children = new Set()
let stopping = false

/** Forks `script` with `args`; resolves with the child once it reports `{ ready }`. */
function startChild (label, script, args, env, execArgv = []) {
  const child = fork(path.join(__dirname, script), args, {
    env: { ...process.env, ...env },
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  child.label = label
  children.add(child)
  child.once('exit', (code, signal) => {
    children.delete(child)
    if (!stopping) {
      console.error(`demo: ${label} exited (${signal || `status ${code}`}); stopping the others`)
      stop(1)
    }
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS)
    child.once('message', (message) => {
      if (message && message.ready !== undefined) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.once('exit', () => {
      clearTimeout(timer)
      reject(new Error(`${label} exited before it was ready`))
    })
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })
}

/** Stops every child (SIGTERM, then SIGKILL after STOP_TIMEOUT_MS) and exits with `code`. */
async function stop (code) {
  if (stopping) return
  stopping = true
  const exits = [...children].map((child) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', resolve)
  }))
  for (const child of children) child.kill('SIGTERM')
  let timer
  const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS) })
  if (await Promise.race([Promise.all(exits).then(() => false), timedOut])) {
    for (const child of children) {
      console.error(`demo: ${child.label} did not exit after SIGTERM; killing it`)
      child.kill('SIGKILL')
    }
    await Promise.all(exits)
  }
  clearTimeout(timer)
  process.exit(code)
}

function parseArgs (argv) {
  const options = { cpuProfDir: null }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--cpu-prof' && i + 1 < argv.length) options.cpuProfDir = path.resolve(argv[++i])
    else throw new SettingsError(`unknown argument ${JSON.stringify(argv[i])}\nusage: node demo.js [--cpu-prof DIR]`)
  }
  return options
}

async function main () {
  const { settings, options } = startup('demo', parseArgs)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(signal, () => stop(0))
  const parent = process.ppid
  setInterval(() => {
    if (process.ppid !== parent) {
      console.error('demo: the process that started it went away; stopping')
      stop(0)
    }
  }, PARENT_CHECK_MS).unref()

  const env = settingsEnv(settings)
  try {
    await Promise.all(settings.upstreams.map((u) => {
      const args = [u.service, u.name, String(u.port)]
      if (u.flaky) args.push('--flaky', '--failure-rate', String(settings.flakyFailureRate))
      return startChild(`upstream ${u.name}`, 'upstream.js', args, env)
    }))
    console.log(`demo: upstreams ${settings.upstreams.map((u) => `${u.name} on 127.0.0.1:${u.port}`).join(', ')}`)
    const execArgv = options.cpuProfDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir]
    await startChild('gateway', 'gateway.js', [], env, execArgv)
  } catch (error) {
    console.error(`demo: ${error.message}`)
    await stop(1)
    return
  }
  console.log('\ndemo: running; Ctrl-C stops the gateway and the upstreams')
}

main()
