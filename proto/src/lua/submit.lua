-- Reserve quota and create the record, atomically.
-- KEYS: [1] task, [2] user tasks, [3] quota, [4] events, [5] unconfirmed index
-- ARGV: [1] daily limit (<= 0: unlimited), [2] cost, [3] quota ttl, [4] record ttl,
--       [5] created ms (score), [6] task id, [7] now, [8] prune cutoff ms, [9..] record fields
-- Returns {1, remaining} or {0, remaining}; remaining is -1 when unlimited.
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local remaining = -1
if limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used + cost > limit then
    return {0, math.max(limit - used, 0)}
  end
  remaining = limit - used - cost
end
redis.call('INCRBY', KEYS[3], cost)
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
-- Until the broker confirms, the reconciler may close it (see confirm.lua, reconcile_unconfirmed.lua).
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {1, remaining}
