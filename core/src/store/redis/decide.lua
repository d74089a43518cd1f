-- floodwall: one rate-limit decision, every layer all-or-nothing (see store/redis.rs).
--
-- The algorithms are ports of core/src/limit/*.rs, step for step, in integer arithmetic on
-- Lua's doubles: every value stays below 2^53 (the engine refuses configurations where
-- limit x window could not), so the results are exact and equal to the memory store's.
--
-- KEYS: the state key of each layer, in order; a sliding_window layer has two (its log, a
--       list of "t:cost" oldest first, and its total).
-- ARGV: [1] mode: d decide (evaluate every layer, consume only if all admit), e evaluate only,
--           r refund (give back what a decide at [2] consumed: a cluster decision whose layers
--           live on several nodes consumes node by node and refunds when a later one denies,
--           and a response that does not count refunds its request), a add (take the cost
--           without asking: a response reported what its request really cost)
--       [2] now in µs since the epoch, or "" for the server's TIME
--       [3] cost  [4] number of layers
--       then per layer: algorithm (f fixed_window, s sliding_window, c sliding_window_counter,
--       b token_bucket; in upper case for a shadow layer, whose denial denies nothing), limit
--       (or capacity), period (window, or the bucket's interval) in µs
-- Returns: { all_allowed, then per layer: allowed, remaining, reset_after, retry_after; then
--            the time used }

local floor = math.floor
local max = math.max
local min = math.min

local now
local mode = ARGV[1]
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])

-- Only the algorithms this call uses are defined: each definition is a closure made anew on
-- every call, and making them all would cost more than the decision itself.
local need = {}
local lower = string.lower
for i = 1, n do
  need[lower(ARGV[4 + (i - 1) * 3 + 1])] = true
end
local refunding = mode == 'r'
local charging = mode == 'a'

-- Integers as digits: Lua's own tostring would write 1.7e+15 for a µs timestamp.
local function num(x)
  return string.format('%.0f', x)
end

-- A key lives at least this long past its last write (ms). Longer than its state needs is
-- harmless — the state is judged by its own times, and a stale one reads as fresh — and it
-- keeps a caller whose clock runs apart from Redis's (clock = "local") from losing state to
-- an expiry measured on Redis's clock.
local MIN_TTL_MS = 1000

local find, sub = string.find, string.sub
local function split(s)
  local out = {}
  local from = 1
  while true do
    local at = find(s, ':', from, true)
    if not at then
      out[#out + 1] = tonumber(sub(s, from))
      return out
    end
    out[#out + 1] = tonumber(sub(s, from, at - 1))
    from = at + 1
  end
end

-- fixed_window -------------------------------------------------------------------------------
local Fixed = {}
if need.f then
function Fixed.load(l)
  local v = redis.call('GET', l.key)
  local p = v and split(v) or {}
  if p[1] and p[2] then
    l.index, l.count = p[1], p[2]
  else
    l.index, l.count = floor(now / l.period), 0
  end
end
function Fixed.advance(l)
  local index = floor(now / l.period)
  if index > l.index then
    l.index, l.count = index, 0
    return now
  end
  return max(now, l.index * l.period)
end
function Fixed.outcome(l, t, allowed)
  local stop = (l.index + 1) * l.period
  local reset = 0
  if l.count > 0 then reset = stop - t end
  local retry = 0
  if not allowed then retry = stop - t end
  return { allowed, l.limit - l.count, reset, retry }
end
function Fixed.evaluate(l)
  local t = Fixed.advance(l)
  return Fixed.outcome(l, t, l.count + cost <= l.limit)
end
function Fixed.consume(l)
  local t = Fixed.advance(l)
  l.count = min(l.count + cost, l.limit)
  return Fixed.outcome(l, t, true)
end
function Fixed.save(l)
  if l.count == 0 then
    redis.call('DEL', l.key)
    return
  end
  local ttl = (l.index + 1) * l.period - now
  if ttl <= 0 then
    redis.call('DEL', l.key)
  else
    redis.call('SET', l.key, num(l.index) .. ':' .. num(l.count), 'PX', num(max(math.ceil(ttl / 1000), MIN_TTL_MS)))
  end
end
end

-- sliding_window (exact log) -----------------------------------------------------------------
local Log = {}
if need.s then
function Log.load(l)
  l.total = tonumber(redis.call('GET', l.key2) or '0') or 0
  local newest = redis.call('LINDEX', l.key, -1)
  l.newest = nil
  if newest then l.newest = split(newest) end
end
function Log.advance(l)
  local t = now
  if l.newest then t = max(now, l.newest[1]) end
  -- Trimmed on every call: entries that have left the window go, whatever the decision.
  while true do
    local oldest = redis.call('LINDEX', l.key, 0)
    if not oldest then break end
    local e = split(oldest)
    if e[1] + l.period > t then break end
    redis.call('LPOP', l.key)
    l.total = l.total - e[2]
    l.trimmed = true
  end
  if l.total <= 0 or redis.call('LLEN', l.key) == 0 then
    l.total = 0
    l.newest = nil
  end
  return t
end
function Log.reset_after(l, t)
  if l.newest then return l.newest[1] + l.period - t end
  return 0
end
function Log.evaluate(l)
  local t = Log.advance(l)
  local remaining = max(l.limit - l.total, 0)
  local reset = Log.reset_after(l, t)
  if cost <= remaining then return { true, remaining, reset, 0 } end
  local must_free = l.total + cost - l.limit
  local freed = 0
  local retry = nil
  local from = 0
  while retry == nil do
    local chunk = redis.call('LRANGE', l.key, from, from + 99)
    if #chunk == 0 then break end
    for _, entry in ipairs(chunk) do
      local e = split(entry)
      freed = freed + e[2]
      if freed >= must_free then
        retry = e[1] + l.period - t
        break
      end
    end
    from = from + 100
  end
  if retry == nil then retry = reset end
  return { false, remaining, reset, retry }
end
function Log.consume(l)
  local t = Log.advance(l)
  if cost > 0 then
    if l.newest and l.newest[1] == t then
      l.newest[2] = l.newest[2] + cost
      redis.call('LSET', l.key, -1, num(t) .. ':' .. num(l.newest[2]))
    else
      l.newest = { t, cost }
      redis.call('RPUSH', l.key, num(t) .. ':' .. num(cost))
    end
    l.total = l.total + cost
    l.dirty = true
  end
  return { true, max(l.limit - l.total, 0), Log.reset_after(l, t), 0 }
end
function Log.save(l)
  if not l.newest then
    redis.call('DEL', l.key, l.key2)
    return
  end
  local ttl = math.ceil((l.newest[1] + l.period - now) / 1000)
  if ttl <= 0 then
    redis.call('DEL', l.key, l.key2)
    return
  end
  ttl = max(ttl, MIN_TTL_MS)
  redis.call('SET', l.key2, num(l.total), 'PX', num(ttl))
  redis.call('PEXPIRE', l.key, num(ttl))
end
end

-- sliding_window_counter ---------------------------------------------------------------------
local Counter = {}
if need.c then
function Counter.load(l)
  local v = redis.call('GET', l.key)
  local p = v and split(v) or {}
  if p[1] and p[2] and p[3] then
    l.index, l.previous, l.current = p[1], p[2], p[3]
  else
    l.index, l.previous, l.current = floor(now / l.period), 0, 0
  end
end
function Counter.advance(l)
  local w = l.period
  local index = floor(now / w)
  if index == l.index + 1 then
    l.previous, l.current, l.index = l.current, 0, index
  elseif index > l.index + 1 then
    l.previous, l.current, l.index = 0, 0, index
  end
  return max(now - l.index * w, 0)
end
function Counter.reset_after(l, e)
  if l.current > 0 then return 2 * l.period - e end
  if l.previous > 0 then return l.period - e end
  return 0
end
function Counter.remaining(l, e)
  local w = l.period
  local room = l.limit * w - l.previous * (w - e) - l.current * w
  return floor(max(room, 0) / w)
end
function Counter.retry_after(l, e)
  local w = l.period
  local headroom = l.limit - l.current - cost
  if headroom >= 0 and l.previous > 0 then
    local untl = w - floor(headroom * w / l.previous)
    return max(untl - e, 0)
  end
  local to_next = w - e
  local fit = max(l.limit - cost, 0)
  local into_next = 0
  if l.current > 0 then into_next = max(w - floor(fit * w / l.current), 0) end
  return to_next + into_next
end
function Counter.evaluate(l)
  local e = Counter.advance(l)
  local w = l.period
  local budget = l.limit * w
  local used = l.current * w + l.previous * (w - e)
  local allowed = used <= budget and cost * w <= budget - used
  local retry = 0
  if not allowed then retry = Counter.retry_after(l, e) end
  return { allowed, floor(max(budget - used, 0) / w), Counter.reset_after(l, e), retry }
end
function Counter.consume(l)
  local e = Counter.advance(l)
  l.current = l.current + cost
  return { true, Counter.remaining(l, e), Counter.reset_after(l, e), 0 }
end
function Counter.save(l)
  local expires = 0
  if l.current > 0 then
    expires = (l.index + 2) * l.period
  elseif l.previous > 0 then
    expires = (l.index + 1) * l.period
  end
  local ttl = math.ceil((expires - now) / 1000)
  if expires == 0 or ttl <= 0 then
    redis.call('DEL', l.key)
  else
    redis.call('SET', l.key, num(l.index) .. ':' .. num(l.previous) .. ':' .. num(l.current), 'PX', num(max(ttl, MIN_TTL_MS)))
  end
end
end

-- token_bucket (GCRA) ------------------------------------------------------------------------
local Bucket = {}
if need.b then
function Bucket.load(l)
  l.tat = tonumber(redis.call('GET', l.key) or now) or now
end
function Bucket.outcome(l, tat, allowed, retry)
  local tolerance = l.limit * l.period
  local remaining = min(floor(max(now + tolerance - tat, 0) / l.period), l.limit)
  return { allowed, remaining, tat - now, retry }
end
function Bucket.evaluate(l)
  local start = max(l.tat, now)
  local tolerance = l.limit * l.period
  local needed = start + cost * l.period - now
  local allowed = needed <= tolerance
  local retry = 0
  if not allowed then retry = needed - tolerance end
  return Bucket.outcome(l, start, allowed, retry)
end
function Bucket.consume(l)
  local start = max(l.tat, now)
  l.tat = start + cost * l.period
  return Bucket.outcome(l, l.tat, true, 0)
end
function Bucket.save(l)
  local ttl = math.ceil((l.tat - now) / 1000)
  if ttl <= 0 then
    redis.call('DEL', l.key)
  else
    redis.call('SET', l.key, num(l.tat), 'PX', num(max(ttl, MIN_TTL_MS)))
  end
end
end

-- refunds: undo one consumption of `cost` made at `now` ----------------------------------------
if refunding then
function Fixed.refund(l)
  if l.index == floor(now / l.period) then
    l.count = max(l.count - cost, 0)
    Fixed.save(l)
  end
end
function Log.refund(l)
  local len = redis.call('LLEN', l.key)
  for i = len - 1, 0, -1 do
    local e = split(redis.call('LINDEX', l.key, i))
    if e[1] == now then
      local left = e[2] - cost
      if left > 0 then
        redis.call('LSET', l.key, i, num(e[1]) .. ':' .. num(left))
      else
        redis.call('LSET', l.key, i, '-')
        redis.call('LREM', l.key, 1, '-')
      end
      l.total = max(l.total - cost, 0)
      break
    end
    if e[1] < now then break end
  end
  local newest = redis.call('LINDEX', l.key, -1)
  l.newest = nil
  if newest then l.newest = split(newest) end
  Log.save(l)
end
function Counter.refund(l)
  local index = floor(now / l.period)
  if l.index == index then
    l.current = max(l.current - cost, 0)
  elseif l.index == index + 1 then
    l.previous = max(l.previous - cost, 0)
  else
    return
  end
  Counter.save(l)
end
function Bucket.refund(l)
  l.tat = l.tat - cost * l.period
  Bucket.save(l)
end
end

-- charges: take `cost` at `now` without asking, never beyond an exhausted state --------------
if charging then
function Fixed.charge(l)
  Fixed.advance(l)
  l.count = min(l.count + cost, l.limit)
end
function Log.charge(l)
  local t = Log.advance(l)
  local c = min(cost, max(l.limit - l.total, 0))
  if c > 0 then
    if l.newest and l.newest[1] == t then
      l.newest[2] = l.newest[2] + c
      redis.call('LSET', l.key, -1, num(t) .. ':' .. num(l.newest[2]))
    else
      l.newest = { t, c }
      redis.call('RPUSH', l.key, num(t) .. ':' .. num(c))
    end
    l.total = l.total + c
  end
end
function Counter.charge(l)
  Counter.advance(l)
  l.current = min(l.current + cost, l.limit)
end
function Bucket.charge(l)
  local start = max(l.tat, now)
  l.tat = min(start + cost * l.period, max(now + l.limit * l.period, start))
end
end

-- the decision -------------------------------------------------------------------------------
local kinds = { f = Fixed, s = Log, c = Counter, b = Bucket }
local layers = {}
local k = 1
for i = 1, n do
  local base = 4 + (i - 1) * 3
  local code = ARGV[base + 1]
  local l = {
    kind = kinds[lower(code)],
    shadow = code ~= lower(code),
    limit = tonumber(ARGV[base + 2]),
    period = tonumber(ARGV[base + 3]),
    key = KEYS[k],
  }
  if lower(code) == 's' then
    l.key2 = KEYS[k + 1]
    k = k + 2
  else
    k = k + 1
  end
  l.kind.load(l)
  layers[i] = l
end

if refunding then
  for i = 1, n do
    layers[i].kind.refund(layers[i])
  end
  return { 1, now }
end

if charging then
  for i = 1, n do
    local l = layers[i]
    l.kind.charge(l)
    l.kind.save(l)
  end
  return { 1, now }
end

local outcomes = {}
local all = true
for i = 1, n do
  local o = layers[i].kind.evaluate(layers[i])
  outcomes[i] = o
  if not o[1] and not layers[i].shadow then all = false end
end

if all and mode == 'd' then
  for i = 1, n do
    local l = layers[i]
    if outcomes[i][1] then
      outcomes[i] = l.kind.consume(l)
      l.kind.save(l)
    elseif l.trimmed then
      -- A shadow layer that would deny consumes nothing.
      l.kind.save(l)
    end
  end
else
  -- Nothing is consumed; a log whose expired entries were trimmed keeps its total in step.
  for i = 1, n do
    local l = layers[i]
    if l.trimmed then l.kind.save(l) end
  end
end

local reply = { all and 1 or 0 }
for i = 1, n do
  local o = outcomes[i]
  reply[#reply + 1] = o[1] and 1 or 0
  reply[#reply + 1] = o[2]
  reply[#reply + 1] = o[3]
  reply[#reply + 1] = o[4]
end
reply[#reply + 1] = now
return reply
