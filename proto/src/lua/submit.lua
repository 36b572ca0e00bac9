-- Admit submissions and create their records, atomically, each in turn: idempotency claim,
-- per-user rate limit (GCRA), active-task cap, daily tick quota, daily token quota, then the
-- writes. One call
-- carries a batch of concurrent submissions (group_commit.rs); each gets its own outcome,
-- exactly as if it had been a call of its own, in the order given.
-- KEYS: KEYS_PER_SUBMISSION per submission; ARGV: per submission, its argument count n, then
-- its n arguments. Both are named in admit().
local KEYS_PER_SUBMISSION = 11
-- Returns one reply per submission: {'accepted', remaining} | {'over_quota', remaining} |
--         {'duplicate', claim} | {'rate_limited', retry ms} | {'too_many_active', count} |
--         {'over_token_quota', remaining};
--         remaining is -1 when unlimited.

local function admit(K, A)
  local task_key = K[1]
  local user_tasks_key = K[2]
  local quota_key = K[3]
  local events_key = K[4]
  local claim_key = K[5]
  local rate_key = K[6]
  local active_key = K[7]
  local unconfirmed_key = K[8]
  local token_quota_key = K[9]
  -- tasks with an `expires_after_seconds`, by when
  local expiring_key = K[10]
  -- every task, for the operators' listing
  local all_tasks_key = K[11]
  -- <= 0: unlimited
  local daily_limit = tonumber(A[1])
  local cost = tonumber(A[2])
  local quota_ttl = A[3]
  local ttl = A[4]
  -- the task's score in the user's list and the unconfirmed index
  local created_ms = A[5]
  local id = A[6]
  local now = A[7]
  -- the user's list drops ids scored below this (their records have expired)
  local prune_before_ms = A[8]
  -- '' = no idempotency key
  local claim = A[9]
  local claim_ttl = A[10]
  -- the rate limit's emission interval (0 = off)
  local emission_ms = tonumber(A[11])
  local burst = tonumber(A[12])
  -- 0 = off
  local max_active = tonumber(A[13])
  -- to prune finished ids from the active set
  local task_prefix = A[14]
  -- <= 0: unlimited
  local daily_token_limit = tonumber(A[15])
  -- the task's token budget, or the estimate for one without
  local token_cost = tonumber(A[16])
  -- '' = never; else unix ms after which a task not started yet fails
  local expires_ms = A[17]
  -- A[18..]: the record's fields, name then value
  local FIELDS = 18

  -- 1. A replayed key returns the claim and touches nothing else (no rate, no quota).
  if claim ~= '' then
    local held = redis.call('GET', claim_key)
    if held then
      return {'duplicate', held}
    end
  end

  -- 2. GCRA: one submission per emission interval, `burst` at once. Redis's clock, so every
  -- gateway replica sees the same time.
  if emission_ms > 0 then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local tat = tonumber(redis.call('GET', rate_key) or '0')
    if tat < now_ms then
      tat = now_ms
    end
    local new_tat = tat + emission_ms
    local allow_at = new_tat - emission_ms * burst
    if allow_at > now_ms then
      return {'rate_limited', tostring(allow_at - now_ms)}
    end
    redis.call('SET', rate_key, new_tat, 'PX', new_tat - now_ms)
  end

  -- 3. Active cap. Ids of tasks that ended are removed by the finishing scripts; a record
  -- that expired or was lost without finishing would hold a slot forever, so at the cap the
  -- set is checked against the records before refusing.
  if max_active > 0 then
    local n = redis.call('SCARD', active_key)
    if n >= max_active then
      for _, member in ipairs(redis.call('SMEMBERS', active_key)) do
        local st = redis.call('HGET', task_prefix .. member, 'status')
        if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'incomplete' then
          redis.call('SREM', active_key, member)
        end
      end
      n = redis.call('SCARD', active_key)
      if n >= max_active then
        return {'too_many_active', tostring(n)}
      end
    end
  end

  -- 4. Daily tick quota.
  local remaining = -1
  if daily_limit > 0 then
    local used = tonumber(redis.call('GET', quota_key) or '0')
    if used + cost > daily_limit then
      return {'over_quota', tostring(math.max(daily_limit - used, 0))}
    end
    remaining = daily_limit - used - cost
  end

  -- 5. Daily token quota: the task's budget (or the estimate) is reserved, and what it did not
  -- spend is given back when it stops (prelude's finish).
  if daily_token_limit > 0 then
    local used = tonumber(redis.call('GET', token_quota_key) or '0')
    if used + token_cost > daily_token_limit then
      return {'over_token_quota', tostring(math.max(daily_token_limit - used, 0))}
    end
  end

  -- 6. Writes.
  redis.call('INCRBY', quota_key, cost)
  redis.call('EXPIRE', quota_key, quota_ttl)
  redis.call('HSET', task_key, unpack(A, FIELDS))
  if daily_token_limit > 0 then
    redis.call('INCRBY', token_quota_key, token_cost)
    redis.call('EXPIRE', token_quota_key, quota_ttl)
    redis.call('HSET', task_key, 'token_quota_key', token_quota_key, 'tokens_reserved', token_cost, 'tokens_base', 0)
  end
  if expires_ms ~= '' then
    redis.call('HSET', task_key, 'expires_at_ms', expires_ms)
    redis.call('ZADD', expiring_key, expires_ms, id)
  end
  if claim ~= '' then
    redis.call('SET', claim_key, claim, 'EX', claim_ttl)
    redis.call('HSET', task_key, 'idem_key', claim_key)
  end
  redis.call('EXPIRE', task_key, ttl)
  redis.call('ZREMRANGEBYSCORE', user_tasks_key, '-inf', '(' .. prune_before_ms)
  redis.call('ZADD', user_tasks_key, created_ms, id)
  redis.call('EXPIRE', user_tasks_key, ttl)
  redis.call('ZREMRANGEBYSCORE', all_tasks_key, '-inf', '(' .. prune_before_ms)
  redis.call('ZADD', all_tasks_key, created_ms, id)
  redis.call('SADD', active_key, id)
  redis.call('EXPIRE', active_key, ttl)
  -- Until the broker confirms, the reconciler may close it (see confirm.lua, reconcile_unconfirmed.lua).
  redis.call('ZADD', unconfirmed_key, created_ms, id)
  redis.call('XADD', events_key, 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', now)
  redis.call('EXPIRE', events_key, ttl)
  return {'accepted', tostring(remaining)}
end

local out = {}
local a = 1
local k = KEYS_PER_SUBMISSION
for t = 0, #KEYS / k - 1 do
  local n = tonumber(ARGV[a])
  local K = {unpack(KEYS, t * k + 1, t * k + k)}
  local A = {unpack(ARGV, a + 1, a + n)}
  a = a + n + 1
  out[t + 1] = admit(K, A)
end
return out
