-- A stopped task is admitted again: the owner extends an `incomplete` one, retries a
-- `failed` or `cancelled` one (from its checkpoint, or from the start), or an operator does
-- it for them (redrive, bulk retry). Admission is as at submit (rate limit, active cap, tick
-- and token quota, each reserving what this run may spend); the previous run's end goes to
-- the record's `history`, and the task goes back `in_queue` with the next enqueue number,
-- marked `resuming` until the caller's publish is confirmed (the reconciler publishes again
-- what stays marked, as for a decision). The owner was checked by the caller.
-- KEYS: the prelude's (KEYS[2]: today's tick quota counter, which the new run reserves
-- from), then:
local resuming_key = KEYS[8]
local rate_key = KEYS[9]
-- today's token quota counter
local token_quota_key = KEYS[10]
local memory_key = KEYS[11]
-- 'extend' (an incomplete task) | 'retry' (failed or cancelled, from the checkpoint)
-- | 'restart' (failed or cancelled, from tick 1)
local mode = ARGV[1]
-- '' = unchanged; else the new budget, which must be higher
local new_max_ticks = ARGV[2]
local new_max_tokens = ARGV[3]
-- <= 0: unlimited
local daily_limit = tonumber(ARGV[4])
local quota_ttl = ARGV[5]
local emission_ms = tonumber(ARGV[6])
local burst = tonumber(ARGV[7])
local max_active = tonumber(ARGV[8])
local task_prefix = ARGV[9]
local daily_token_limit = tonumber(ARGV[10])
-- what a task without a token budget reserves of the daily token quota
local token_estimate = tonumber(ARGV[11])
local now = ARGV[12]
local now_ms = ARGV[13]
local ttl = ARGV[14]
-- '' or the id of the (bulk) operation: one task is admitted once per operation
local op = ARGV[15]
-- Returns {'missing'} | {'state', status} (not allowed from there) | {'gone'} (its checkpoint
--   expired) | {'already', status} (this operation admitted it before) | {'not_raised', field}
--   | {'rate_limited', ms} | {'too_many_active', n} | {'over_quota', remaining}
--   | {'over_token_quota', remaining} | {'admitted', seq}

local h = read_record()
if not h then
  return {'missing'}
end
local st = h['status']
if op ~= '' and h['admitted_by'] == op then
  return {'already', st}
end
if mode == 'extend' then
  if st ~= 'incomplete' then
    return {'state', st}
  end
  -- The budget it stopped at must rise, or the run would stop again at once.
  local reason = h['incomplete_reason']
  if reason == 'max_tokens' and new_max_tokens == '' then
    return {'not_raised', 'max_tokens'}
  end
  if reason == 'max_ticks' and new_max_ticks == '' then
    return {'not_raised', 'max_ticks'}
  end
elseif st ~= 'failed' and st ~= 'cancelled' then
  return {'state', st}
end
local max_ticks = tonumber(h['max_ticks'])
local max_tokens = tonumber(h['max_tokens'] or '0')
if new_max_ticks ~= '' then
  if tonumber(new_max_ticks) <= max_ticks then
    return {'not_raised', 'max_ticks'}
  end
  max_ticks = tonumber(new_max_ticks)
end
if new_max_tokens ~= '' then
  if max_tokens > 0 and tonumber(new_max_tokens) <= max_tokens then
    return {'not_raised', 'max_tokens'}
  end
  max_tokens = tonumber(new_max_tokens)
end
local restart = mode == 'restart'
local ticks_used = tonumber(h['ticks_used'] or '0')
local tokens_used = tonumber(h['tokens_used'] or '0')
if restart then
  ticks_used = 0
  tokens_used = 0
elseif tonumber(h['tick'] or '0') > 0 and redis.call('EXISTS', checkpoint_key) == 0 then
  return {'gone'}
end

-- Admission, as at submit (admission.lua): rate, active cap, tick quota, token quota.
local cost = math.max(max_ticks - ticks_used, 0)
local token_cost = token_estimate
if max_tokens > 0 then
  token_cost = math.max(max_tokens - tokens_used, 0)
end
local refused = admit_rate(rate_key, emission_ms, burst)
  or admit_active(active_key, max_active, task_prefix)
  or admit_quota(quota_key, daily_limit, cost, 'over_quota')
  or admit_quota(token_quota_key, daily_token_limit, token_cost, 'over_token_quota')
if refused then
  return refused
end

-- Writes. The run that ended goes to the history (the last 20 are kept).
local history = cjson.decode(h['history'] or '[]')
history[#history + 1] = {
  status = st,
  error = h['error'],
  incomplete_reason = h['incomplete_reason'],
  tick = tonumber(h['tick'] or '0'),
  attempt = tonumber(h['attempt'] or '0'),
  ended_at = h['finished_at'] or h['updated_at'],
}
while #history > 20 do
  table.remove(history, 1)
end
local seq = redis.call('HINCRBY', task_key, 'seq', 1)
redis.call('HDEL', task_key, 'result', 'error', 'finished_at', 'incomplete_reason', 'cancel_requested', 'settled',
  'decision', 'decided_call', 'pending_action', 'pending_schema', 'partial', 'worker_id', 'webhook_state',
  'webhook_attempts', 'webhook_last', 'expires_at_ms')
redis.call('HSET', task_key, 'status', 'in_queue', 'max_ticks', max_ticks, 'max_tokens', max_tokens, 'deliveries', 0,
  'history', cjson.encode(history), 'quota_key', quota_key, 'ticks_used', ticks_used, 'tokens_used', tokens_used,
  'updated_at', now, 'runs', tonumber(h['runs'] or '0') + 1)
if op ~= '' then
  redis.call('HSET', task_key, 'admitted_by', op)
end
if restart then
  redis.call('HDEL', task_key, 'tick')
  redis.call('DEL', checkpoint_key, memory_key)
else
  -- Kept for the retention while stopped; the run owns them again now.
  redis.call('EXPIRE', checkpoint_key, ttl)
  redis.call('EXPIRE', memory_key, ttl)
end
redis.call('INCRBY', quota_key, cost)
redis.call('EXPIRE', quota_key, quota_ttl)
if daily_token_limit > 0 then
  redis.call('INCRBY', token_quota_key, token_cost)
  redis.call('EXPIRE', token_quota_key, quota_ttl)
  redis.call('HSET', task_key, 'token_quota_key', token_quota_key, 'tokens_reserved', token_cost, 'tokens_base',
    tokens_used)
else
  redis.call('HDEL', task_key, 'token_quota_key', 'tokens_reserved', 'tokens_base')
end
redis.call('SADD', active_key, task_id())
redis.call('EXPIRE', active_key, ttl)
redis.call('ZADD', resuming_key, now_ms, task_id())
redis.call('EXPIRE', task_key, ttl)
redis.call('EXPIRE', user_tasks_key, ttl)
emit(ttl, 'status', 'in_queue', 'admitted', mode, 'at', now)
return {'admitted', seq}
