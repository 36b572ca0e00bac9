-- Admit a submission and create its record, atomically: idempotency claim, per-user rate
-- limit (GCRA), active-task cap, daily tick quota, then the writes.
-- KEYS: [1] task, [2] user tasks, [3] quota, [4] events, [5] idempotency claim, [6] rate,
--       [7] active tasks, [8] unconfirmed index
-- ARGV: [1] daily limit (<= 0: unlimited), [2] cost, [3] quota ttl, [4] record ttl,
--       [5] created ms (score), [6] task id, [7] now, [8] prune cutoff ms,
--       [9] idempotency claim value ('' = no key), [10] idempotency ttl s,
--       [11] rate emission interval ms (0 = off), [12] burst, [13] max active (0 = off),
--       [14] task key prefix (to prune finished ids from the active set), [15..] record fields
-- Returns {'accepted', remaining} | {'over_quota', remaining} | {'duplicate', claim} |
--         {'rate_limited', retry ms} | {'too_many_active', count}; remaining is -1 when unlimited.

-- 1. A replayed key returns the claim and touches nothing else (no rate, no quota).
if ARGV[9] ~= '' then
  local claim = redis.call('GET', KEYS[5])
  if claim then
    return {'duplicate', claim}
  end
end

-- 2. GCRA: one submission per emission interval, `burst` at once. Redis's clock, so every
-- gateway replica sees the same time.
local emission = tonumber(ARGV[11])
if emission > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local tat = tonumber(redis.call('GET', KEYS[6]) or '0')
  if tat < now_ms then
    tat = now_ms
  end
  local new_tat = tat + emission
  local allow_at = new_tat - emission * tonumber(ARGV[12])
  if allow_at > now_ms then
    return {'rate_limited', tostring(allow_at - now_ms)}
  end
  redis.call('SET', KEYS[6], new_tat, 'PX', new_tat - now_ms)
end

-- 3. Active cap. Ids of tasks that ended are removed by the finishing scripts; a record
-- that expired or was lost without finishing would hold a slot forever, so at the cap the
-- set is checked against the records before refusing.
local max_active = tonumber(ARGV[13])
if max_active > 0 then
  local n = redis.call('SCARD', KEYS[7])
  if n >= max_active then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[7])) do
      local st = redis.call('HGET', ARGV[14] .. id, 'status')
      if not st or st == 'completed' or st == 'failed' or st == 'cancelled' then
        redis.call('SREM', KEYS[7], id)
      end
    end
    n = redis.call('SCARD', KEYS[7])
    if n >= max_active then
      return {'too_many_active', tostring(n)}
    end
  end
end

-- 4. Daily tick quota.
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local remaining = -1
if limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used + cost > limit then
    return {'over_quota', tostring(math.max(limit - used, 0))}
  end
  remaining = limit - used - cost
end

-- 5. Writes.
redis.call('INCRBY', KEYS[3], cost)
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 15))
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[5], ARGV[9], 'EX', ARGV[10])
  redis.call('HSET', KEYS[1], 'idem_key', KEYS[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[7], ARGV[6])
redis.call('EXPIRE', KEYS[7], ARGV[4])
-- Until the broker confirms, the reconciler may close it (see confirm.lua, reconcile_unconfirmed.lua).
redis.call('ZADD', KEYS[8], ARGV[5], ARGV[6])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {'accepted', tostring(remaining)}
