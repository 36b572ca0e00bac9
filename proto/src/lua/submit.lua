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

  -- 2. Rate, active cap, tick quota, token quota (admission.lua); a refusal writes nothing
  -- (but a rate slot spent by an attempt the later checks refuse).
  local refused = admit_rate(rate_key, emission_ms, burst)
    or admit_active(active_key, max_active, task_prefix)
    or admit_quota(quota_key, daily_limit, cost, 'over_quota')
    or admit_quota(token_quota_key, daily_token_limit, token_cost, 'over_token_quota')
  if refused then
    return refused
  end
  local remaining = -1
  if daily_limit > 0 then
    remaining = daily_limit - tonumber(redis.call('GET', quota_key) or '0') - cost
  end

  -- 3. Writes.
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
