-- floodwall: a batch of rate-limit decisions in one call, each all-or-nothing across its
-- layers, decided in order (see store/redis/mod.rs).
--
-- The algorithms are ports of core/src/limit/*.rs, step for step, in integer arithmetic on
-- Lua's doubles: every value stays below 2^53 (the engine refuses configurations where
-- limit x window could not), so the results are exact and equal to the memory store's.
--
-- The work per decision is kept small, since it is what every gateway sharing this Redis pays
-- for: no table, closure or string is made per decision or per layer beyond the state that is
-- read and written (the layers' values live in arrays made once per call); only the parts the
-- call's shapes need are made (each function is a closure made anew on every call); a state
-- is parsed with one find and two or three tonumber; and the commonest decision —
-- fixed_window layers, decided — runs inline, without a function call.
--
-- A fixed window on Redis's clock whose window is a whole number of milliseconds, 10 ms or
-- more, keeps its count as a bare integer in a key that expires at the window's last
-- millisecond (PXAT): the key's life is the window, so there is no index to parse or format,
-- and a write within the window is one INCRBY. Read in the first EDGE µs of a window, such a
-- key's expiry (PTTL) says whether it is the window's or the last one's still alive. Other
-- fixed windows (on the caller's clock, or with other periods) keep "index:count".
--
-- KEYS: the state key of each layer of each decision, in order; a sliding_window layer has two
--       (its log, a list of "t:cost" oldest first, and its total).
-- ARGV: [1] t when each decision carries its time, else empty
--       [2] the number of shapes, then each shape — what decisions of the same rules share,
--           sent once a call (each argument costs Redis more than reading it from a table):
--           mode: d decide (evaluate every layer, consume only if all admit), e evaluate only,
--             r refund (give back what a decide at `now` consumed: a cluster decision whose
--             layers live on several nodes consumes node by node and refunds when a later one
--             denies, and a response that does not count refunds its request), a add (take
--             the cost without asking: a response reported what its request really cost),
--             w reward (an administrator gives back: a refund at `now` that takes a log's
--             newest entries, whenever they were logged)
--           number of layers, then per layer: algorithm (f fixed_window, s sliding_window,
--             c sliding_window_counter, b token_bucket, k a fixed_window aligned to the
--             calendar; in upper case for a shadow layer,
--             whose denial denies nothing; followed by ! for a layer that blocks its key after
--             denials, whose block key follows its state keys, and by ~ for a layer whose keys
--             may have limits of their own, whose own-limit key comes next), limit (or
--             capacity), period
--             (window, or the bucket's interval; a calendar window's nominal length) in µs,
--             for a calendar window the number of the window the caller's clock is in and
--             when it starts, ends and the next one ends (µs), and for a blocking layer the
--             block's length in µs, the denials in one window that start it, and that window
--             in µs
--       then per decision, in order: its shape (from 1), its cost, and with t its time in µs
--       since the epoch, or "" for the server's TIME (read once per call; always without t)
-- A calendar window (days, weeks or months of a time zone, which Lua cannot compute) is
-- judged with the boundaries the caller sent: the script's time picks the window among the
-- one before, that one and the two after (past them, on clocks more than a window apart,
-- windows of the nominal length). Its key keeps "index:count" like a window on the
-- caller's clock.
--
-- Returns, per decision: all_allowed, then per layer allowed (1; 0 denied, 2 denied by a
--          block), remaining, reset_after, retry_after (zeros for r and a) and for a ~ layer
--          the key's own limit in force (0 for none), then the time used.
--
-- A ~ layer's own-limit key holds "limit:period:until" (the period in the layer's units: a
-- window, or a bucket's emission interval, computed by the caller when the limit was set;
-- until in µs on the decisions' clock) and expires a second after until; before until, the
-- layer is judged by it instead of the shape's.
--
-- A blocking layer's block key holds "until:index:denials" (µs, the denial window's index,
-- the denials counted in it). A decision on a blocked key denies with the block's end as
-- retry_after; a layer that denies of itself — when deciding or evaluating (a cluster's
-- first step, whose denial is the decision) — counts a denial, and the one that reaches
-- the count starts a block. The key expires when the later of the block and the window ends.

local floor, max, min, ceil = math.floor, math.max, math.min, math.ceil
local find, sub, format, byte = string.find, string.sub, string.format, string.byte
local call, tonumber = redis.call, tonumber

local FIXED, LOG, COUNTER, BUCKET, CALENDAR = 102, 115, 99, 98, 107 -- f s c b k
local UPPER = 32

-- A key lives at least this long past its last write (ms). Longer than its state needs is
-- harmless — the state is judged by its own times, and a stale one reads as fresh — and it
-- keeps a caller whose clock runs apart from Redis's (clock = "local") from losing state to
-- an expiry measured on Redis's clock.
local MIN_TTL_MS = 1000

local timed = ARGV[1] == 't'

-- How long into a window a bare count is checked against its key's expiry (µs).
local EDGE = 2000

-- Whether a fixed window of `period` (µs) keeps a bare count on Redis's clock.
local function bare(period)
  return period >= 10000 and period % 1000 == 0
end

local server_now
-- Redis's time in µs, read once per call.
local function server_time()
  if not server_now then
    local t = call('TIME')
    server_now = t[1] * 1000000 + t[2]
  end
  return server_now
end

-- The count a fixed window's key `key` holds for window `index` of `period` at Redis's time
-- `at` (µs), from its value `v`, and whether the key is that window's bare count (a write
-- then keeps its expiry): nil for the last window's count, still alive, or an unreadable
-- value; an "index:count" of this window (written before bare counts) is its count, to be
-- written again as one.
local function bare_count(key, v, index, period, at)
  local n = tonumber(v)
  if not n then
    local colon = find(v, ':', 1, true)
    if not colon then return nil, false end
    local i, c = tonumber(sub(v, 1, colon - 1)), tonumber(sub(v, colon + 1))
    if i == index and c then return c, false end
    return nil, false
  end
  local start = index * period
  if at - start < EDGE then
    -- Its expiry is this window's last millisecond or the one before it began.
    local expires = floor(at / 1000) + call('PTTL', key)
    if expires < (start + period / 2) / 1000 then return nil, false end
  end
  return n, true
end

-- Whether the decision at hand is a refund (which names the time it gives back at), and
-- whether it is a reward (a refund at its time that, on a log, gives back the newest entries).
local refunding, rewarding = false, false

-- Per layer of the decision at hand (reused by the next): limit, period, key, state A, B, C
-- (fixed: index, count; counter: index, previous, current; bucket: tat; log: total, newest
-- time, newest cost), the time it was judged at, whether its expiry is kept, whether it
-- admits; and, on the general path, algorithm, shadow, a log's second key, whether a log was
-- trimmed, and the rest of the outcome.
local LIMIT, PERIOD, KEY, A, B, T, LIVE, OK = {}, {}, {}, {}, {}, {}, {}, {}
-- Per fixed-window layer: whether its key keeps a bare count, and the count it held.
local BARE, HELD = {}, {}
local KIND, SHADOW, KEY2, C, TRIM, REM, RESET, RETRY

local now, cost
-- Whether the decision at hand is on Redis's clock: then a key holding its window's state
-- already expires at that window's end (its first write set that), and a write within the
-- window keeps the expiry (KEEPTTL) instead of setting it again, which costs Redis more than
-- the write itself. On the caller's clock every write sets it, so that a state never expires
-- early by Redis's clock.
local redis_time

-- The shapes, read first: each one's mode, layer count, first layer in the L arrays, and
-- whether it takes the inline path (fixed_window layers only, decided); which algorithms the
-- call uses (USES, by code), and whether any decision takes the general path.
local SMODE, SN, SFIRST, SPLAIN = {}, {}, {}, {}
local LCODE, LSHADOW, LLIMIT, LPERIOD = {}, {}, {}, {}
-- Per blocking layer of a shape: the block's length, the denials that start it, their window.
local LBLOCK, LAFTER, LBWIN = {}, {}, {}
-- Per layer of a shape: whether its keys may have limits of their own.
local LOWN = {}
-- Per calendar layer of a shape: the caller's window, its start and end, the next one's end.
local LI0, LB0, LB1, LB2 = {}, {}, {}, {}
local USES = {}
local general = false
local a = 3
local l = 0
for sh = 1, tonumber(ARGV[2]) do
  local mode, n = ARGV[a], tonumber(ARGV[a + 1])
  SMODE[sh], SN[sh], SFIRST[sh] = mode, n, l
  local plain = mode == 'd'
  a = a + 2
  for _ = 1, n do
    local code = byte(ARGV[a])
    local shadow = code < 97
    if shadow then code = code + UPPER end
    l = l + 1
    LCODE[l], LSHADOW[l] = code, shadow
    LLIMIT[l], LPERIOD[l] = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    USES[code] = true
    if code ~= FIXED or shadow then plain = false end
    local next = a + 3
    if code == CALENDAR then
      LI0[l], LB0[l] = tonumber(ARGV[next]), tonumber(ARGV[next + 1])
      LB1[l], LB2[l] = tonumber(ARGV[next + 2]), tonumber(ARGV[next + 3])
      USES[FIXED] = true
      next = next + 4
    end
    if #ARGV[a] > 1 and find(ARGV[a], '!', 2, true) then
      LBLOCK[l], LAFTER[l], LBWIN[l] = tonumber(ARGV[next]), tonumber(ARGV[next + 1]), tonumber(ARGV[next + 2])
      plain = false
      next = next + 3
    else
      LBLOCK[l] = false
    end
    LOWN[l] = #ARGV[a] > 1 and find(ARGV[a], '~', 2, true) ~= nil
    if LOWN[l] then plain = false end
    a = next
  end
  SPLAIN[sh] = plain
  if not plain then general = true end
end

-- The general path's parts, made only when the call needs them.
local num, ttl_ms, pair, triple, windex, wstart, fixed_load, fixed_advance, fixed_outcome, fixed_save, log_newest
local log_load, log_advance, log_reset, log_evaluate, log_add, log_consume, log_save
local counter_load, counter_advance, counter_reset, counter_retry, counter_evaluate
local counter_consume, counter_save, bucket_load, bucket_outcome, bucket_evaluate
local bucket_consume, bucket_save, load, evaluate, consume, save, refund, charge

-- Per layer of the decision at hand, for a blocking one: its block key, until when it is
-- blocked, the denial window's index and the denials in it, and whether it denies by a block.
local KEYB, BUNTIL, BINDEX, BCOUNT, BLOCKED = {}, {}, {}, {}, {}
-- Per layer of the decision at hand: the key's own limit in force, or false.
local OWN = {}
-- Per layer of the decision at hand: for a calendar window, its layer in the L arrays.
local CAL = {}

if general then
  KIND, SHADOW, KEY2, C, TRIM, REM, RESET, RETRY = {}, {}, {}, {}, {}, {}, {}, {}

  -- Integers as digits: Lua's own conversion (%.14g) would write 1.7e+15 for a µs timestamp.
  function num(x)
    if x < 1e14 then return x .. '' end
    return format('%.0f', x)
  end

  -- The TTL (ms, at least MIN_TTL_MS) of a state that is fresh again at `stop` (µs).
  function ttl_ms(stop, now)
    return max(ceil((stop - now) / 1000), MIN_TTL_MS)
  end

  -- "a:b" as two numbers (nil when unreadable).
  function pair(v)
    local at = find(v, ':', 1, true)
    if not at then return nil end
    return tonumber(sub(v, 1, at - 1)), tonumber(sub(v, at + 1))
  end

  -- "a:b:c" (or nil, a missing key) as three numbers (nil when unreadable).
  function triple(v)
    if not v then return nil end
    local at = find(v, ':', 1, true)
    local at2 = at and find(v, ':', at + 1, true)
    if not at2 then return nil end
    return tonumber(sub(v, 1, at - 1)), tonumber(sub(v, at + 1, at2 - 1)), tonumber(sub(v, at2 + 1))
  end

  if USES[FIXED] then
    -- fixed_window -------------------------------------------------------------------------------
    -- The number of layer j's window that time t falls in, and when window i starts.
    function windex(j, t)
      local c = CAL[j]
      if not c then return floor(t / PERIOD[j]) end
      if t < LB0[c] then return LI0[c] - 1 end
      if t < LB1[c] then return LI0[c] end
      if t < LB2[c] then return LI0[c] + 1 end
      return LI0[c] + 2
    end
    function wstart(j, i)
      local c = CAL[j]
      if not c then return i * PERIOD[j] end
      local d = i - LI0[c]
      if d <= 0 then return LB0[c] + d * PERIOD[j] end
      if d == 1 then return LB1[c] end
      return LB2[c] + (d - 2) * PERIOD[j]
    end
    function fixed_load(j)
      local v = call('GET', KEY[j])
      local period = PERIOD[j]
      local index, count
      BARE[j], HELD[j] = false, 0
      if not CAL[j] and bare(period) and (redis_time or (refunding and v and not find(v, ':', 1, true))) then
        -- A bare count is of Redis's current window (a refund names its own time: it
        -- applies if that is the same window).
        local at = server_time()
        index = floor(at / period)
        local live = false
        if v then count, live = bare_count(KEY[j], v, index, period, at) end
        BARE[j], HELD[j] = true, count or 0
        A[j], B[j], LIVE[j] = index, count or 0, live
        return
      end
      if v then index, count = pair(v) end
      if index and count then
        A[j], B[j], LIVE[j] = index, count, redis_time
      else
        A[j], B[j], LIVE[j] = windex(j, now), 0, false
      end
    end
    function fixed_advance(j)
      local index = windex(j, now)
      if index > A[j] then
        A[j], B[j], LIVE[j] = index, 0, false
        T[j] = now
      else
        T[j] = max(now, wstart(j, A[j]))
      end
    end
    function fixed_outcome(j, allowed)
      local stop = wstart(j, A[j] + 1)
      OK[j], REM[j] = allowed, LIMIT[j] - B[j]
      if B[j] > 0 then RESET[j] = stop - T[j] else RESET[j] = 0 end
      if allowed then RETRY[j] = 0 else RETRY[j] = stop - T[j] end
    end
    function fixed_save(j)
      if BARE[j] then
        if B[j] == 0 then
          if LIVE[j] then call('DEL', KEY[j]) end
        elseif LIVE[j] then
          if B[j] ~= HELD[j] then call('INCRBY', KEY[j], B[j] - HELD[j]) end
        else
          call('SET', KEY[j], num(B[j]), 'PXAT', num((A[j] + 1) * PERIOD[j] / 1000 - 1))
        end
        return
      end
      if B[j] == 0 then
        call('DEL', KEY[j])
        return
      end
      local stop = wstart(j, A[j] + 1)
      if stop <= now then
        call('DEL', KEY[j])
      elseif LIVE[j] then
        call('SET', KEY[j], num(A[j]) .. ':' .. num(B[j]), 'KEEPTTL')
      else
        call('SET', KEY[j], num(A[j]) .. ':' .. num(B[j]), 'PX', ttl_ms(stop, now))
      end
    end
  end

  if USES[LOG] then
    -- sliding_window (exact log) -----------------------------------------------------------------
    function log_newest(j)
      local newest = call('LINDEX', KEY[j], -1)
      if newest then
        B[j], C[j] = pair(newest)
      else
        B[j], C[j] = nil, nil
      end
    end
    function log_load(j)
      A[j] = tonumber(call('GET', KEY2[j]) or '0') or 0
      log_newest(j)
    end
    function log_advance(j)
      local t = now
      if B[j] then t = max(now, B[j]) end
      T[j] = t
      -- Trimmed on every call: entries that have left the window go, whatever the decision.
      while true do
        local oldest = call('LINDEX', KEY[j], 0)
        if not oldest then break end
        local at, c = pair(oldest)
        if at + PERIOD[j] > t then break end
        call('LPOP', KEY[j])
        A[j] = A[j] - c
        TRIM[j] = true
      end
      if A[j] <= 0 or call('LLEN', KEY[j]) == 0 then
        A[j], B[j], C[j] = 0, nil, nil
      end
    end
    function log_reset(j)
      if B[j] then return B[j] + PERIOD[j] - T[j] end
      return 0
    end
    function log_evaluate(j)
      log_advance(j)
      local t = T[j]
      local remaining = max(LIMIT[j] - A[j], 0)
      local reset = log_reset(j)
      REM[j], RESET[j] = remaining, reset
      if cost <= remaining then
        OK[j], RETRY[j] = true, 0
        return
      end
      local must_free = A[j] + cost - LIMIT[j]
      local freed = 0
      local retry = nil
      local from = 0
      while retry == nil do
        local chunk = call('LRANGE', KEY[j], from, from + 99)
        if #chunk == 0 then break end
        for i = 1, #chunk do
          local at, c = pair(chunk[i])
          freed = freed + c
          if freed >= must_free then
            retry = at + PERIOD[j] - t
            break
          end
        end
        from = from + 100
      end
      OK[j], RETRY[j] = false, retry or reset
    end
    -- Adds `c` at the layer's time to its log (merging with a newest entry of the same time).
    function log_add(j, c)
      local t = T[j]
      if B[j] == t then
        C[j] = C[j] + c
        call('LSET', KEY[j], -1, num(t) .. ':' .. num(C[j]))
      else
        B[j], C[j] = t, c
        call('RPUSH', KEY[j], num(t) .. ':' .. num(c))
      end
      A[j] = A[j] + c
    end
    function log_consume(j)
      if cost > 0 then log_add(j, cost) end
      OK[j], REM[j], RESET[j], RETRY[j] = true, max(LIMIT[j] - A[j], 0), log_reset(j), 0
    end
    function log_save(j)
      if not B[j] then
        call('DEL', KEY[j], KEY2[j])
        return
      end
      local stop = B[j] + PERIOD[j]
      if stop <= now then
        call('DEL', KEY[j], KEY2[j])
        return
      end
      local ttl = ttl_ms(stop, now)
      call('SET', KEY2[j], num(A[j]), 'PX', ttl)
      call('PEXPIRE', KEY[j], ttl)
    end
  end

  if USES[COUNTER] then
    -- sliding_window_counter ---------------------------------------------------------------------
    function counter_load(j)
      local index, previous, current = triple(call('GET', KEY[j]))
      if index and previous and current then
        -- Its expiry is the current window's end plus one window only while current > 0.
        A[j], B[j], C[j], LIVE[j] = index, previous, current, redis_time and current > 0
      else
        A[j], B[j], C[j], LIVE[j] = floor(now / PERIOD[j]), 0, 0, false
      end
    end
    -- Advances the windows; T is the time into the current one.
    function counter_advance(j)
      local w = PERIOD[j]
      local index = floor(now / w)
      if index == A[j] + 1 then
        A[j], B[j], C[j], LIVE[j] = index, C[j], 0, false
      elseif index > A[j] + 1 then
        A[j], B[j], C[j], LIVE[j] = index, 0, 0, false
      end
      T[j] = max(now - A[j] * w, 0)
    end
    function counter_reset(j)
      if C[j] > 0 then return 2 * PERIOD[j] - T[j] end
      if B[j] > 0 then return PERIOD[j] - T[j] end
      return 0
    end
    function counter_retry(j)
      local w, e = PERIOD[j], T[j]
      local headroom = LIMIT[j] - C[j] - cost
      if headroom >= 0 and B[j] > 0 then
        return max(w - floor(headroom * w / B[j]) - e, 0)
      end
      local into_next = 0
      if C[j] > 0 then into_next = max(w - floor(max(LIMIT[j] - cost, 0) * w / C[j]), 0) end
      return w - e + into_next
    end
    function counter_evaluate(j)
      counter_advance(j)
      local w, e = PERIOD[j], T[j]
      local budget = LIMIT[j] * w
      local used = C[j] * w + B[j] * (w - e)
      local allowed = used <= budget and cost * w <= budget - used
      OK[j], REM[j], RESET[j] = allowed, floor(max(budget - used, 0) / w), counter_reset(j)
      if allowed then RETRY[j] = 0 else RETRY[j] = counter_retry(j) end
    end
    function counter_consume(j)
      C[j] = C[j] + cost
      local w, e = PERIOD[j], T[j]
      local room = LIMIT[j] * w - B[j] * (w - e) - C[j] * w
      OK[j], REM[j], RESET[j], RETRY[j] = true, floor(max(room, 0) / w), counter_reset(j), 0
    end
    function counter_save(j)
      local stop = 0
      if C[j] > 0 then
        stop = (A[j] + 2) * PERIOD[j]
      elseif B[j] > 0 then
        stop = (A[j] + 1) * PERIOD[j]
      end
      local state = num(A[j]) .. ':' .. num(B[j]) .. ':' .. num(C[j])
      if stop <= now then
        call('DEL', KEY[j])
      elseif LIVE[j] and C[j] > 0 then
        call('SET', KEY[j], state, 'KEEPTTL')
      else
        call('SET', KEY[j], state, 'PX', ttl_ms(stop, now))
      end
    end
  end

  if USES[BUCKET] then
    -- token_bucket (GCRA) ------------------------------------------------------------------------
    function bucket_load(j)
      A[j] = tonumber(call('GET', KEY[j]) or now) or now
    end
    function bucket_outcome(j, tat, allowed, retry)
      local remaining = min(floor(max(now + LIMIT[j] * PERIOD[j] - tat, 0) / PERIOD[j]), LIMIT[j])
      OK[j], REM[j], RESET[j], RETRY[j] = allowed, remaining, tat - now, retry
    end
    function bucket_evaluate(j)
      local start = max(A[j], now)
      local tolerance = LIMIT[j] * PERIOD[j]
      local needed = start + cost * PERIOD[j] - now
      if needed <= tolerance then
        bucket_outcome(j, start, true, 0)
      else
        bucket_outcome(j, start, false, needed - tolerance)
      end
    end
    function bucket_consume(j)
      A[j] = max(A[j], now) + cost * PERIOD[j]
      bucket_outcome(j, A[j], true, 0)
    end
    function bucket_save(j)
      if A[j] <= now then
        call('DEL', KEY[j])
      else
        call('SET', KEY[j], num(A[j]), 'PX', ttl_ms(A[j], now))
      end
    end
  end

  function load(j)
    local k = KIND[j]
    if k == FIXED then fixed_load(j)
    elseif k == BUCKET then bucket_load(j)
    elseif k == COUNTER then counter_load(j)
    else log_load(j) end
  end
  function evaluate(j)
    local k = KIND[j]
    if k == FIXED then
      fixed_advance(j)
      fixed_outcome(j, B[j] + cost <= LIMIT[j])
    elseif k == BUCKET then bucket_evaluate(j)
    elseif k == COUNTER then counter_evaluate(j)
    else log_evaluate(j) end
  end
  -- Consumes `cost` on a layer just evaluated (its state advanced to T).
  function consume(j)
    local k = KIND[j]
    if k == FIXED then
      B[j] = min(B[j] + cost, LIMIT[j])
      fixed_outcome(j, true)
    elseif k == BUCKET then bucket_consume(j)
    elseif k == COUNTER then counter_consume(j)
    else log_consume(j) end
  end
  function save(j)
    local k = KIND[j]
    if k == FIXED then fixed_save(j)
    elseif k == BUCKET then bucket_save(j)
    elseif k == COUNTER then counter_save(j)
    else log_save(j) end
  end

  -- refunds: undo one consumption of `cost` made at `now` ----------------------------------------
  function refund(j)
    local k = KIND[j]
    if k == FIXED then
      if A[j] == windex(j, now) then
        B[j] = max(B[j] - cost, 0)
        fixed_save(j)
      end
    elseif k == BUCKET then
      A[j] = A[j] - cost * PERIOD[j]
      bucket_save(j)
    elseif k == COUNTER then
      local index = floor(now / PERIOD[j])
      if A[j] == index then
        C[j] = max(C[j] - cost, 0)
      elseif A[j] == index + 1 then
        B[j] = max(B[j] - cost, 0)
      else
        return
      end
      counter_save(j)
    else
      local key = KEY[j]
      if rewarding then
        -- A reward gives back from the newest entries, whenever they were logged.
        local left = cost
        while left > 0 do
          local newest = call('LINDEX', key, -1)
          if not newest then break end
          local at, c = pair(newest)
          if c > left then
            call('LSET', key, -1, num(at) .. ':' .. num(c - left))
            A[j] = max(A[j] - left, 0)
            left = 0
          else
            call('RPOP', key)
            A[j] = max(A[j] - c, 0)
            left = left - c
          end
        end
        log_newest(j)
        log_save(j)
        return
      end
      local len = call('LLEN', key)
      for i = len - 1, 0, -1 do
        local at, c = pair(call('LINDEX', key, i))
        if at == now then
          local left = c - cost
          if left > 0 then
            call('LSET', key, i, num(at) .. ':' .. num(left))
          else
            call('LSET', key, i, '-')
            call('LREM', key, 1, '-')
          end
          A[j] = max(A[j] - cost, 0)
          break
        end
        if at < now then break end
      end
      log_newest(j)
      log_save(j)
    end
  end

  -- charges: take `cost` at `now` without asking, never beyond an exhausted state --------------
  function charge(j)
    local k = KIND[j]
    if k == FIXED then
      fixed_advance(j)
      B[j] = min(B[j] + cost, LIMIT[j])
    elseif k == BUCKET then
      local start = max(A[j], now)
      A[j] = min(start + cost * PERIOD[j], max(now + LIMIT[j] * PERIOD[j], start))
    elseif k == COUNTER then
      counter_advance(j)
      C[j] = min(C[j] + cost, LIMIT[j])
    else
      log_advance(j)
      local c = min(cost, max(LIMIT[j] - A[j], 0))
      if c > 0 then log_add(j, c) end
    end
    save(j)
  end
end

-- the batch ----------------------------------------------------------------------------------
local reply = {}
local r = 0
local k = 1
local args = #ARGV
while a <= args do
  local sh = tonumber(ARGV[a])
  cost = tonumber(ARGV[a + 1])
  local at = ''
  if timed then
    at = ARGV[a + 2]
    a = a + 3
  else
    a = a + 2
  end
  redis_time = at == ''
  if redis_time then
    now = server_time()
  else
    now = tonumber(at)
  end
  local mode, n, first = SMODE[sh], SN[sh], SFIRST[sh]
  refunding = mode == 'r' or mode == 'w'
  rewarding = mode == 'w'
  if SPLAIN[sh] then
    -- fixed_window layers only, decided (the commonest decision): the general path's steps,
    -- inline.
    local all = true
    for j = 1, n do
      local limit, period = LLIMIT[first + j], LPERIOD[first + j]
      local index, count, t, live = floor(now / period), 0, now, false
      local v = call('GET', KEYS[k])
      local counted = redis_time and bare(period)
      if v and counted then
        local n, held = bare_count(KEYS[k], v, index, period, now)
        if n then count, live = n, held end
      elseif v then
        local colon = find(v, ':', 1, true)
        if colon then
          local i, c = tonumber(sub(v, 1, colon - 1)), tonumber(sub(v, colon + 1))
          -- A state of this window, or of a later one (a caller whose clock is behind).
          if i and c and i >= index then
            index, count, t, live = i, c, max(now, i * period), redis_time
          end
        end
      end
      LIMIT[j], PERIOD[j], KEY[j] = limit, period, KEYS[k]
      A[j], B[j], T[j], LIVE[j] = index, count, t, live
      BARE[j] = counted
      local allowed = count + cost <= limit
      OK[j] = allowed
      if not allowed then all = false end
      k = k + 1
    end
    if all then
      for j = 1, n do
        local index, count = A[j], min(B[j] + cost, LIMIT[j])
        B[j] = count
        local stop = (index + 1) * PERIOD[j]
        if BARE[j] then
          -- Admitted: the count is the one before plus the cost.
          if LIVE[j] then
            if cost > 0 then call('INCRBY', KEY[j], cost) end
          elseif count > 0 then
            call('SET', KEY[j], count, 'PXAT', format('%.0f', stop / 1000 - 1))
          end
        elseif count == 0 or stop <= now then
          call('DEL', KEY[j])
        else
          local state
          if index < 1e14 and count < 1e14 then
            state = index .. ':' .. count
          else
            state = format('%.0f:%.0f', index, count)
          end
          if LIVE[j] then
            call('SET', KEY[j], state, 'KEEPTTL')
          else
            call('SET', KEY[j], state, 'PX', max(ceil((stop - now) / 1000), MIN_TTL_MS))
          end
        end
      end
    end
    r = r + 1
    reply[r] = all and 1 or 0
    for j = 1, n do
      local stop, count, allowed = (A[j] + 1) * PERIOD[j], B[j], OK[j]
      reply[r + 1] = allowed and 1 or 0
      reply[r + 2] = LIMIT[j] - count
      reply[r + 3] = count > 0 and stop - T[j] or 0
      reply[r + 4] = allowed and 0 or stop - T[j]
      r = r + 4
    end
    r = r + 1
    reply[r] = now
  else
    for j = 1, n do
      local code = LCODE[first + j]
      if code == CALENDAR then
        code, CAL[j] = FIXED, first + j
      else
        CAL[j] = false
      end
      KIND[j], SHADOW[j] = code, LSHADOW[first + j]
      LIMIT[j], PERIOD[j] = LLIMIT[first + j], LPERIOD[first + j]
      KEY[j] = KEYS[k]
      TRIM[j] = false
      if code == LOG then
        KEY2[j] = KEYS[k + 1]
        k = k + 2
      else
        k = k + 1
      end
      BLOCKED[j] = false
      if LBLOCK[first + j] then
        KEYB[j] = KEYS[k]
        k = k + 1
        local u, i, c = triple(call('GET', KEYB[j]))
        if u and i and c then
          BUNTIL[j], BINDEX[j], BCOUNT[j] = u, i, c
        else
          BUNTIL[j], BINDEX[j], BCOUNT[j] = 0, 0, 0
        end
      else
        KEYB[j] = false
      end
      OWN[j] = false
      if LOWN[first + j] then
        local v = call('GET', KEYS[k])
        k = k + 1
        local ol, op, ou = triple(v)
        if ol and op and ou and ol >= 1 and op >= 1 and now < ou then
          LIMIT[j], PERIOD[j], OWN[j] = ol, op, ol
        end
      end
      load(j)
    end

    if mode == 'd' or mode == 'e' then
      local all = true
      for j = 1, n do
        evaluate(j)
        if KEYB[j] and BUNTIL[j] > now then
          local left = BUNTIL[j] - now
          OK[j], BLOCKED[j], REM[j], RETRY[j] = false, true, 0, left
          if RESET[j] < left then RESET[j] = left end
        end
        if not OK[j] and not SHADOW[j] then all = false end
      end
      -- Each layer that denied of itself counts a denial, which may start a block.
      for j = 1, n do
        if KEYB[j] and not OK[j] and not BLOCKED[j] then
          local f = first + j
          local window = LBWIN[f]
          local index = floor(now / window)
          if BINDEX[j] == index then BCOUNT[j] = BCOUNT[j] + 1 else BCOUNT[j] = 1 end
          BINDEX[j] = index
          if BCOUNT[j] >= LAFTER[f] then
            BCOUNT[j] = 0
            BUNTIL[j] = now + LBLOCK[f]
            local left = LBLOCK[f]
            BLOCKED[j], REM[j], RETRY[j] = true, 0, left
            if RESET[j] < left then RESET[j] = left end
          end
          local stop = BUNTIL[j]
          if BCOUNT[j] > 0 then stop = max(stop, (index + 1) * window) end
          call('SET', KEYB[j], num(BUNTIL[j]) .. ':' .. num(index) .. ':' .. num(BCOUNT[j]),
            'PX', ttl_ms(stop, now))
        end
      end
      if all and mode == 'd' then
        for j = 1, n do
          if OK[j] then
            consume(j)
            save(j)
          elseif TRIM[j] then
            -- A shadow layer that would deny consumes nothing.
            save(j)
          end
        end
      else
        -- Nothing is consumed; a log whose expired entries were trimmed keeps its total in step.
        for j = 1, n do
          if TRIM[j] then save(j) end
        end
      end
      r = r + 1
      reply[r] = all and 1 or 0
      for j = 1, n do
        reply[r + 1] = OK[j] and 1 or (BLOCKED[j] and 2 or 0)
        reply[r + 2] = REM[j]
        reply[r + 3] = RESET[j]
        reply[r + 4] = RETRY[j]
        r = r + 4
        if LOWN[first + j] then
          r = r + 1
          reply[r] = OWN[j] or 0
        end
      end
    else
      local apply = refunding and refund or charge
      for j = 1, n do apply(j) end
      r = r + 1
      reply[r] = 1
      for j = 1, n do
        local m = LOWN[first + j] and 5 or 4
        for _ = 1, m do
          r = r + 1
          reply[r] = 0
        end
      end
    end
    r = r + 1
    reply[r] = now
  end
end
return reply
