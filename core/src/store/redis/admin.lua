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
--      decide.lua) and the end of its lifetime, ARGV[3] µs from now — ARGV[4] µs since the
--      epoch, or Redis's TIME when it is empty; it expires a second after that end;
--   c  clear the own limit: KEYS[1] deleted;
--   q  query the own limit: KEYS[1]'s limit and the µs left of its lifetime at ARGV[2] (or
--      Redis's TIME when it is empty), {0, 0} without one in force.
-- Returns {1}, except for q.

local function time(at)
  if at == '' then
    local t = redis.call('TIME')
    return t[1] * 1000000 + t[2]
  end
  return tonumber(at)
end

local op = ARGV[1]
if op == 'f' then
  redis.call('DEL', unpack(KEYS))
  return {1}
elseif op == 'l' then
  local length = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], string.format('%s:%.0f', ARGV[2], time(ARGV[4]) + length), 'PX',
    math.ceil(length / 1000) + 1000)
  return {1}
elseif op == 'c' then
  redis.call('DEL', KEYS[1])
  return {1}
elseif op == 'q' then
  local v = redis.call('GET', KEYS[1])
  local first = v and string.find(v, ':', 1, true)
  local second = first and string.find(v, ':', first + 1, true)
  local limit = second and tonumber(string.sub(v, 1, first - 1))
  local left = limit and tonumber(string.sub(v, second + 1)) - time(ARGV[2])
  if not left or left <= 0 then return {0, 0} end
  return {limit, left}
end
local now = time(ARGV[3])
local length = tonumber(ARGV[2])
redis.call('SET', KEYS[#KEYS], string.format('%.0f:0:0', now + length), 'PX',
  math.max(math.ceil(length / 1000), 1))
return {1}
