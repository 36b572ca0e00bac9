-- Admit submissions and create their records, atomically, each in turn: idempotency claim,
-- per-user rate limit (GCRA), active-task cap, daily tick quota, then the writes. One call
-- carries a batch of concurrent submissions (group_commit.rs); each gets its own outcome,
-- exactly as if it had been a call of its own, in the order given.
-- KEYS: 8 per submission: [1] task, [2] user tasks, [3] quota, [4] events, [5] idempotency
--       claim, [6] rate, [7] active tasks, [8] unconfirmed index
-- ARGV: per submission, its argument count n, then n arguments:
--       [1] daily limit (<= 0: unlimited), [2] cost, [3] quota ttl, [4] record ttl,
--       [5] created ms (score), [6] task id, [7] now, [8] prune cutoff ms,
--       [9] idempotency claim value ('' = no key), [10] idempotency ttl s,
--       [11] rate emission interval ms (0 = off), [12] burst, [13] max active (0 = off),
--       [14] task key prefix (to prune finished ids from the active set), [15..] record fields
-- Returns one reply per submission: {'accepted', remaining} | {'over_quota', remaining} |
--         {'duplicate', claim} | {'rate_limited', retry ms} | {'too_many_active', count};
--         remaining is -1 when unlimited.

local function admit(K, A)
  -- 1. A replayed key returns the claim and touches nothing else (no rate, no quota).
  if A[9] ~= '' then
    local claim = redis.call('GET', K[5])
    if claim then
      return {'duplicate', claim}
    end
  end

  -- 2. GCRA: one submission per emission interval, `burst` at once. Redis's clock, so every
  -- gateway replica sees the same time.
  local emission = tonumber(A[11])
  if emission > 0 then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local tat = tonumber(redis.call('GET', K[6]) or '0')
    if tat < now_ms then
      tat = now_ms
    end
    local new_tat = tat + emission
    local allow_at = new_tat - emission * tonumber(A[12])
    if allow_at > now_ms then
      return {'rate_limited', tostring(allow_at - now_ms)}
    end
    redis.call('SET', K[6], new_tat, 'PX', new_tat - now_ms)
  end

  -- 3. Active cap. Ids of tasks that ended are removed by the finishing scripts; a record
  -- that expired or was lost without finishing would hold a slot forever, so at the cap the
  -- set is checked against the records before refusing.
  local max_active = tonumber(A[13])
  if max_active > 0 then
    local n = redis.call('SCARD', K[7])
    if n >= max_active then
      for _, id in ipairs(redis.call('SMEMBERS', K[7])) do
        local st = redis.call('HGET', A[14] .. id, 'status')
        if not st or st == 'completed' or st == 'failed' or st == 'cancelled' then
          redis.call('SREM', K[7], id)
        end
      end
      n = redis.call('SCARD', K[7])
      if n >= max_active then
        return {'too_many_active', tostring(n)}
      end
    end
  end

  -- 4. Daily tick quota.
  local limit = tonumber(A[1])
  local cost = tonumber(A[2])
  local remaining = -1
  if limit > 0 then
    local used = tonumber(redis.call('GET', K[3]) or '0')
    if used + cost > limit then
      return {'over_quota', tostring(math.max(limit - used, 0))}
    end
    remaining = limit - used - cost
  end

  -- 5. Writes.
  redis.call('INCRBY', K[3], cost)
  redis.call('EXPIRE', K[3], A[3])
  redis.call('HSET', K[1], unpack(A, 15))
  if A[9] ~= '' then
    redis.call('SET', K[5], A[9], 'EX', A[10])
    redis.call('HSET', K[1], 'idem_key', K[5])
  end
  redis.call('EXPIRE', K[1], A[4])
  redis.call('ZREMRANGEBYSCORE', K[2], '-inf', '(' .. A[8])
  redis.call('ZADD', K[2], A[5], A[6])
  redis.call('EXPIRE', K[2], A[4])
  redis.call('SADD', K[7], A[6])
  redis.call('EXPIRE', K[7], A[4])
  -- Until the broker confirms, the reconciler may close it (see confirm.lua, reconcile_unconfirmed.lua).
  redis.call('ZADD', K[8], A[5], A[6])
  redis.call('XADD', K[4], 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', A[7])
  redis.call('EXPIRE', K[4], A[4])
  return {'accepted', tostring(remaining)}
end

local out = {}
local a = 1
for t = 0, #KEYS / 8 - 1 do
  local n = tonumber(ARGV[a])
  local K = {unpack(KEYS, t * 8 + 1, t * 8 + 8)}
  local A = {unpack(ARGV, a + 1, a + n)}
  a = a + n + 1
  out[t + 1] = admit(K, A)
end
return out
