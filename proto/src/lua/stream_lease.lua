-- Opens one of a user's event streams if they hold fewer than `limit` live ones.
-- Leases past their expiry belong to streams whose gateway died: they no longer count.
local streams = KEYS[1]
local stream_id = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
if redis.call('ZCARD', streams) >= limit then
  return 0
end
redis.call('ZADD', streams, now + lease_ms, stream_id)
redis.call('PEXPIRE', streams, lease_ms)
return 1
