-- The counts of rules that count locally between syncs (`sync = "100ms"`), one hash per key
-- and window: a field per process holding what that process has admitted in the window, a
-- field per process holding the number of the sync that set it (`ID#`), and the field `=`
-- holding the sum of the counts.
--
-- KEYS: the hashes. ARGV[1]: this process's field. Then for each key: this process's count
-- in that window (an absolute count, not a change: sending it twice counts it once), the
-- number of that count (higher for every count the process takes of the key later), and the
-- hash's time to live in ms. A count numbered no higher than the last one applied to a hash
-- changes nothing there (it crossed a later one on its way); a count numbered 0 is only read.
--
-- Replies, for each key: the process's count as the hash holds it after, and the total.

local me = ARGV[1]
local mark = me .. '#'
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local own = tonumber(ARGV[3 * i - 1])
  local seq = tonumber(ARGV[3 * i])
  local now = redis.call('HMGET', key, me, mark, '=')
  local held = tonumber(now[1]) or 0
  local total = tonumber(now[3]) or 0
  if seq > (tonumber(now[2]) or 0) then
    if own ~= held then
      redis.call('HSET', key, me, own, mark, seq)
      total = redis.call('HINCRBY', key, '=', own - held)
      redis.call('PEXPIRE', key, ARGV[3 * i + 1])
      held = own
    elseif now[2] then
      redis.call('HSET', key, mark, seq)
    end
  end
  out[2 * i - 1] = held
  out[2 * i] = total
end
return out
