-- Take up to `limit` webhook deliveries that are due, leasing each for `lease_ms`: a
-- dispatcher that dies mid-delivery leaves them due again when the lease ends, and two
-- dispatchers (gateway replicas) never take the same one.
local due_key = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
-- Returns the task ids taken.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZADD', due_key, now + lease_ms, id)
end
return ids
