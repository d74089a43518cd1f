-- floodwall: administration of one key (see store/redis/mod.rs): forget what it counted, block
-- it for a while, or give it a limit of its own.
--
-- ARGV[1] is the operation:
--   f  forget: KEYS are the key's state keys and its block key, all deleted (its own limit,
--      if any, stays);
--   b  block: KEYS end with the block key, which then holds a block that ends ARGV[2] µs from
--      now — ARGV[3] µs since the epoch, or Redis's TIME when it is empty — and expires with
--      it;
--   l  own limit: KEYS[1] is the own-limit key, set to ARGV[2] ("limit:period", see
--      decide.lua) for ARGV[3] ms;
--   c  clear the own limit: KEYS[1] deleted;
--   q  query the own limit: KEYS[1]'s limit and its milliseconds to live, {0, 0} without one.
-- Returns {1}, except for q.

local op = ARGV[1]
if op == 'f' then
  redis.call('DEL', unpack(KEYS))
  return {1}
elseif op == 'l' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return {1}
elseif op == 'c' then
  redis.call('DEL', KEYS[1])
  return {1}
elseif op == 'q' then
  local v = redis.call('GET', KEYS[1])
  local colon = v and string.find(v, ':', 1, true)
  local limit = colon and tonumber(string.sub(v, 1, colon - 1))
  if not limit then return {0, 0} end
  return {limit, redis.call('PTTL', KEYS[1])}
end
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(ARGV[3])
end
local length = tonumber(ARGV[2])
redis.call('SET', KEYS[#KEYS], string.format('%.0f:0:0', now + length), 'PX',
  math.max(math.ceil(length / 1000), 1))
return {1}
