-- Admit submissions and create their records, atomically, each in turn: idempotency claim,
-- per-user rate limit (GCRA), active-task cap, daily tick quota, daily token quota, then the
-- writes. One call
-- carries a batch of concurrent submissions (group_commit.rs); each gets its own outcome,
-- exactly as if it had been a call of its own, in the order given.
-- KEYS: the three shared keys below, then KEYS_PER_SUBMISSION per submission. ARGV: the
-- SHARED arguments below, then per submission its argument count n and its n arguments.
-- What is the same for the whole batch is passed once: Redis turns every argument into a
-- Lua string, and a submission's own arguments are its cost.
local KEYS_PER_SUBMISSION = 7
-- Until the broker confirms, the reconciler may close a task (confirm.lua, reconcile_unconfirmed.lua).
local unconfirmed_key = KEYS[1]
-- tasks with an `expires_after_seconds`, by when
local expiring_key = KEYS[2]
-- every task, for the operators' listing
local all_tasks_key = KEYS[3]
local SHARED_KEYS = 3
local ttl = ARGV[1]
local claim_ttl = ARGV[2]
-- the rate limit's emission interval (0 = off)
local emission_ms = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
-- 0 = off
local max_active = tonumber(ARGV[5])
-- to prune finished ids from the active set
local task_prefix = ARGV[6]
-- <= 0: unlimited
local daily_limit = tonumber(ARGV[7])
-- <= 0: unlimited
local daily_token_limit = tonumber(ARGV[8])
-- how long a stopped task's checkpoint is kept (the record's `checkpoint_ttl`)
local checkpoint_ttl = ARGV[9]
-- the indexes drop ids scored below this (their records have expired)
local prune_before_ms = ARGV[10]
local SHARED = 10
-- Returns two strings per submission, in one flat array (Redis converts every nested table
-- of a reply field by field): 'accepted', remaining | 'over_quota', remaining |
--         'duplicate', claim | 'rate_limited', retry ms | 'too_many_active', count |
--         'over_token_quota', remaining;
--         remaining is -1 when unlimited.

-- Keys whose per-call upkeep (pruning, lifetime) this call has done already.
local done = {}
-- The accepted submissions' scores and ids, in ZADD's order, for the shared indexes.
local indexed, indexed_n = {}, 0

-- The submission's keys are KEYS[k + 1 .. k + KEYS_PER_SUBMISSION], its arguments
-- ARGV[a + 1 .. a + n] (read in place: no copies per submission).
local function admit(k, a, n)
  local task_key = KEYS[k + 1]
  local user_tasks_key = KEYS[k + 2]
  -- the day's tick counter (its name is also the record's `quota_key`)
  local quota_key = KEYS[k + 3]
  local claim_key = KEYS[k + 4]
  local rate_key = KEYS[k + 5]
  local active_key = KEYS[k + 6]
  local token_quota_key = KEYS[k + 7]
  -- the task's max_ticks: what it reserves of the day's ticks. Written as the argument's own
  -- string: Redis formats a Lua number given to redis.call with sprintf, which costs more
  -- than the command itself.
  local cost_arg = ARGV[a + 1]
  local cost = tonumber(cost_arg)
  local quota_ttl = ARGV[a + 2]
  -- the task's score in the user's list and the unconfirmed index
  local created_ms = ARGV[a + 3]
  local id = ARGV[a + 4]
  -- '' = no idempotency key
  local claim = ARGV[a + 5]
  -- the task's token budget, or the estimate for one without
  local token_cost_arg = ARGV[a + 6]
  local token_cost = tonumber(token_cost_arg)
  -- '' = never; else unix ms after which a task not started yet fails
  local expires_ms = ARGV[a + 7]
  -- the record's own values
  local user_id = ARGV[a + 8]
  local mandate = ARGV[a + 9]
  local created_at = ARGV[a + 10]
  -- ARGV[a + 11 .. a + n]: the record's optional fields, name then value
  local OPTIONAL = 11

  -- 1. A replayed key returns the claim and touches nothing else (no rate, no quota).
  if claim ~= '' then
    local held = redis.call('GET', claim_key)
    if held then
      return 'duplicate', held
    end
  end

  -- 2. Rate, active cap, tick quota, token quota (admission.lua); a refusal writes nothing
  -- (but a rate slot spent by an attempt the later checks refuse).
  local refused = admit_rate(rate_key, emission_ms, burst)
    or admit_active(active_key, max_active, task_prefix)
    or admit_quota(quota_key, daily_limit, cost, 'over_quota')
    or admit_quota(token_quota_key, daily_token_limit, token_cost, 'over_token_quota')
  if refused then
    return refused[1], refused[2]
  end

  -- 3. Writes. The day's counters get their lifetime when this write creates them.
  local used = redis.call('INCRBY', quota_key, cost_arg)
  if used == cost then
    redis.call('EXPIRE', quota_key, quota_ttl)
  end
  local remaining = '-1'
  if daily_limit > 0 then
    remaining = tostring(daily_limit - used)
  end
  -- (`ticks_used` and `cancel_requested` start absent: 0 and not requested.)
  redis.call('HSET', task_key, 'user_id', user_id, 'status', 'in_queue', 'mandate', mandate, 'max_ticks', cost_arg,
    'attempt', '0', 'created_at', created_at, 'updated_at', created_at, 'quota_key', quota_key,
    'checkpoint_ttl', checkpoint_ttl, unpack(ARGV, a + OPTIONAL, a + n))
  if daily_token_limit > 0 then
    if redis.call('INCRBY', token_quota_key, token_cost_arg) == token_cost then
      redis.call('EXPIRE', token_quota_key, quota_ttl)
    end
    redis.call('HSET', task_key, 'token_quota_key', token_quota_key, 'tokens_reserved', token_cost_arg,
      'tokens_base', '0')
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
  redis.call('ZADD', user_tasks_key, created_ms, id)
  redis.call('SADD', active_key, id)
  -- Once per key per call: a batch's submissions of one user share the index and the set.
  if not done[user_tasks_key] then
    done[user_tasks_key] = true
    redis.call('ZREMRANGEBYSCORE', user_tasks_key, '-inf', '(' .. prune_before_ms)
    redis.call('EXPIRE', user_tasks_key, ttl)
    redis.call('EXPIRE', active_key, ttl)
  end
  -- The two shared indexes get the whole batch in one ZADD each, after the loop: nothing
  -- in this call reads them, and a call of Redis's from Lua costs more than a member.
  indexed_n = indexed_n + 2
  indexed[indexed_n - 1] = created_ms
  indexed[indexed_n] = id
  -- No event is written: a task's stream starts with its first change after admission, and
  -- a follower is told `in_queue` from the record (events/mod.rs), which saves creating a
  -- stream per submission.
  return 'accepted', remaining
end

local out = {}
local a = SHARED + 1
for t = 0, (#KEYS - SHARED_KEYS) / KEYS_PER_SUBMISSION - 1 do
  local n = tonumber(ARGV[a])
  out[2 * t + 1], out[2 * t + 2] = admit(SHARED_KEYS + t * KEYS_PER_SUBMISSION, a, n)
  a = a + n + 1
end
if indexed_n > 0 then
  redis.call('ZREMRANGEBYSCORE', all_tasks_key, '-inf', '(' .. prune_before_ms)
  redis.call('ZADD', all_tasks_key, unpack(indexed, 1, indexed_n))
  redis.call('ZADD', unconfirmed_key, unpack(indexed, 1, indexed_n))
end
return out
