-- Take up to ARGV[1] webhook deliveries that are due, leasing each for ARGV[2] ms: a
-- dispatcher that dies mid-delivery leaves them due again when the lease ends, and two
-- dispatchers (gateway replicas) never take the same one.
-- KEYS: [1] webhooks due. Returns the task ids taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
end
return ids
