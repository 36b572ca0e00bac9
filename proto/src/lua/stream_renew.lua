-- Extends a live stream's lease; a lease already gone (expired and pruned) is not revived.
local streams = KEYS[1]
local stream_id = ARGV[1]
local lease_ms = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = redis.call('ZADD', streams, 'XX', 'CH', now + lease_ms, stream_id)
if renewed == 1 then
  redis.call('PEXPIRE', streams, lease_ms)
end
return renewed
