'use strict'
/**
 * `redis-server` processes for the tests: a single node on a free 127.0.0.1 port, with no
 * persistence, in a temporary directory. A test that needs Redis FAILS — it never skips — when
 * `redis-server` cannot be started (`make test` installs it when missing).
 *
 * Commands go over a raw socket in RESP, so the tests need no Redis client library.
 */

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const HOST = '127.0.0.1'
/** How long a server gets to answer PING after its start (bounded polling). */
const START_TIMEOUT_MS = 10_000
const POLL_MS = 20
/** How long one raw command may take before it fails. */
const COMMAND_TIMEOUT_MS = 5_000

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A free TCP port on 127.0.0.1 (free when asked; the server binds it right after). */
function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** The RESP encoding of one command. */
function encode (args) {
  const parts = [`*${args.length}\r\n`]
  for (const arg of args) {
    const s = String(arg)
    parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`)
  }
  return parts.join('')
}

/**
 * Parses one reply at `offset` of `buf`: `{ value, end }`, or null when the buffer does not
 * hold the whole reply yet. Error replies parse to `{ error }` values.
 */
function parse (buf, offset = 0) {
  const lineEnd = buf.indexOf('\r\n', offset)
  if (lineEnd < 0) return null
  const kind = String.fromCharCode(buf[offset])
  const rest = buf.toString('utf8', offset + 1, lineEnd)
  const next = lineEnd + 2
  switch (kind) {
    case '+': return { value: rest, end: next }
    case '-': return { value: { error: rest }, end: next }
    case ':': return { value: Number(rest), end: next }
    case '$': {
      const n = Number(rest)
      if (n < 0) return { value: null, end: next }
      if (buf.length < next + n + 2) return null
      return { value: buf.toString('utf8', next, next + n), end: next + n + 2 }
    }
    case '*': {
      const n = Number(rest)
      if (n < 0) return { value: null, end: next }
      const items = []
      let at = next
      for (let i = 0; i < n; i++) {
        const item = parse(buf, at)
        if (item === null) return null
        items.push(item.value)
        at = item.end
      }
      return { value: items, end: at }
    }
    default:
      throw new Error(`unexpected RESP reply ${JSON.stringify(buf.toString('utf8', offset, lineEnd))}`)
  }
}

/**
 * Sends one command to `port` over a fresh connection; resolves with the decoded reply
 * (simple strings, integers, bulk strings, arrays of those); rejects on an error reply, a
 * closed connection or after COMMAND_TIMEOUT_MS.
 */
function command (port, ...args) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    let settled = false
    const socket = net.createConnection({ host: HOST, port })
    const finish = (error, value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (error) reject(error)
      else resolve(value)
    }
    const timer = setTimeout(() => finish(new Error(`redis ${args[0]}: no reply in ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS)
    socket.once('error', (error) => finish(error))
    socket.once('close', () => finish(new Error(`redis ${args[0]}: connection closed`)))
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      let reply
      try {
        reply = parse(buf)
      } catch (error) {
        finish(error)
        return
      }
      if (reply === null) return
      const { value } = reply
      if (value && typeof value === 'object' && !Array.isArray(value) && 'error' in value) {
        finish(new Error(`redis error: ${value.error}`))
      } else {
        finish(null, value)
      }
    })
    socket.write(encode(args))
  })
}

/** Every server still running, killed if the process exits without stopping them. */
const running = new Set()
process.on('exit', () => {
  for (const server of running) {
    try { server.process.kill('SIGKILL') } catch {}
  }
})

/** A running `redis-server` on 127.0.0.1; build it with `await RedisServer.start()`. */
class RedisServer {
  constructor (port, child, dir) {
    this.port = port
    this.process = child
    this.dir = dir
    this.exited = false
    this.exitPromise = new Promise((resolve) => {
      child.once('exit', () => {
        this.exited = true
        running.delete(this)
        resolve()
      })
    })
  }

  /** Starts a server (on `port`, or a free one) and waits until it answers PING. */
  static async start (port) {
    port = port || await freePort()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `floodwall-node-redis-${port}-`))
    const args = [
      '--port', String(port),
      '--bind', HOST,
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir
    ]
    const child = spawn('redis-server', args, { stdio: 'ignore' })
    const server = new RedisServer(port, child, dir)
    let spawnError = null
    child.once('error', (error) => {
      spawnError = error
      server.exited = true
      running.delete(server)
    })
    running.add(server)
    const attempts = Math.ceil(START_TIMEOUT_MS / POLL_MS)
    for (let i = 0; i < attempts; i++) {
      if (spawnError) break
      if (server.exited) break
      try {
        if (await command(port, 'PING') === 'PONG') return server
      } catch {}
      await sleep(POLL_MS)
    }
    await server.stop()
    if (spawnError && spawnError.code === 'ENOENT') {
      throw new Error('redis-server is not installed: apt-get install redis-server (make test does)')
    }
    throw new Error(`redis-server did not start on port ${port}${spawnError ? `: ${spawnError.message}` : ''}`)
  }

  get url () {
    return `redis://${HOST}:${this.port}`
  }

  /** One command over a fresh connection (see `command`). */
  command (...args) {
    return command(this.port, ...args)
  }

  /** Kills the server (SIGKILL: no shutdown work), waits for its exit, removes its dir. */
  async stop () {
    if (!this.exited) {
      try { this.process.kill('SIGKILL') } catch {}
      let timer
      const bound = new Promise((resolve) => { timer = setTimeout(resolve, 10_000) })
      await Promise.race([this.exitPromise, bound])
      clearTimeout(timer)
    }
    running.delete(this)
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

module.exports = { RedisServer, freePort, command, sleep }
