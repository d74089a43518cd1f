-- floodwall: administration of one key (see store/redis/mod.rs): forget what it counted, or
-- block it for a while.
--
-- KEYS: the key's state keys, then its block key (last).
-- ARGV: [1] f (forget: delete them all) or b (block: the block key holds a block that ends
--       ARGV[2] µs from now — ARGV[3] µs since the epoch, or Redis's TIME when it is empty —
--       and expires with it).
-- Returns {1}.

if ARGV[1] == 'f' then
  redis.call('DEL', unpack(KEYS))
  return {1}
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
