-- Shared by every task script (prepended by proto::store). The first seven KEYS of every
-- script that may end a task, built by TaskStore::finishing:
local task_key = KEYS[1]
local quota_key = KEYS[2]
local events_key = KEYS[3]
local checkpoint_key = KEYS[4]
local user_tasks_key = KEYS[5]
-- the owner's active-task set
local active_key = KEYS[6]
local webhooks_due_key = KEYS[7]

-- The task id is the last part of the record key (a UUID has no ':').
local function task_id()
  return string.match(task_key, '([^:]+)$')
end

local function is_terminal(st)
  return st == 'completed' or st == 'failed' or st == 'cancelled'
end

-- The record as a table of its fields, or nil when there is none.
local function read_record()
  local flat = redis.call('HGETALL', task_key)
  if #flat == 0 then
    return nil
  end
  local h = {}
  for i = 1, #flat, 2 do
    h[flat[i]] = flat[i + 1]
  end
  return h
end

local function emit(ttl, ...)
  redis.call('XADD', events_key, 'MAXLEN', '~', '1000', '*', ...)
  redis.call('EXPIRE', events_key, ttl)
end

-- The result of a task cancelled before any agent ran it: the same shape as a task
-- cancelled while running (which carries what it had gathered), so clients read one shape.
local CANCELLED_UNSTARTED = '{"success":false,"deliverables":[],"notes":"cancelled before it started","sources":[]}'
-- Cancelled while its run was interrupted (the agent died after the cancel request).
local CANCELLED_INTERRUPTED = '{"success":false,"deliverables":[],"notes":"cancelled while its run was interrupted","sources":[]}'

-- The error of a task that was not started before its `expires_after_seconds` passed.
local EXPIRED_IN_QUEUE = 'expired in queue'

-- A submission that was never enqueued frees its idempotency claim: the client was told
-- (or, its gateway gone, never told) that nothing was accepted, so a retry with the same key
-- must be a fresh attempt.
local function release_claim()
  local claim_key = redis.call('HGET', task_key, 'idem_key')
  if claim_key then
    local claim = redis.call('GET', claim_key)
    if claim and string.match(claim, '^%a+:([^:]+):') == task_id() then
      redis.call('DEL', claim_key)
    end
  end
end

-- The task's memories in Redis (`memory_key`, passed by the agent's scripts only): `retain`
-- '' or nil leaves them (no Redis memory store, or not the agent), '0' deletes them, n keeps
-- them n more seconds (MEMORY_RETENTION_SECONDS).
local function forget_memory(memory_key, retain)
  if memory_key == nil or retain == nil or retain == '' then
    return
  end
  if retain == '0' then
    redis.call('DEL', memory_key)
  else
    redis.call('EXPIRE', memory_key, retain)
  end
end

-- Ends a run of the task: `status` is terminal, or 'incomplete' (stopped at its token or tick
-- budget, `err` naming which; extend resumes it). Settles this admission once: the unused
-- part of its tick and token reservations is refunded (tokens spent past the reservation are
-- charged), the owner's active-task slot freed, the end's webhook scheduled. The checkpoint
-- and the Redis memories are dropped when the task completed; otherwise kept for the record's
-- `checkpoint_ttl` (CHECKPOINT_RETENTION_SECONDS), since retry and extend resume from them.
-- The caller has already checked that the transition is allowed. `tokens_used` nil keeps
-- what progress recorded.
local function finish(status, result, err, ticks_used, now, ttl, memory_key, memory_retain, tokens_used)
  local f = redis.call('HMGET', task_key, 'max_ticks', 'ticks_used', 'webhook_url', 'settled', 'tokens_used',
    'tokens_reserved', 'tokens_base', 'token_quota_key', 'checkpoint_ttl')
  local max_ticks = tonumber(f[1] or '0')
  local used = ticks_used
  if used == nil then
    used = tonumber(f[2] or '0')
  end
  local spent = tokens_used
  if spent == nil then
    spent = tonumber(f[5] or '0')
  end
  redis.call('HSET', task_key, 'status', status, 'updated_at', now, 'ticks_used', used, 'tokens_used', spent)
  if status == 'incomplete' then
    redis.call('HSET', task_key, 'incomplete_reason', err)
  else
    redis.call('HSET', task_key, 'finished_at', now)
    if err ~= nil and err ~= '' then
      redis.call('HSET', task_key, 'error', err)
    end
  end
  if result ~= nil and result ~= '' then
    redis.call('HSET', task_key, 'result', result)
  end
  -- An incomplete task that is then cancelled was settled when it stopped.
  if f[4] ~= '1' then
    redis.call('HSET', task_key, 'settled', '1')
    local refund = max_ticks - used
    -- A counter that already expired belongs to a past day: nothing to give back.
    if refund > 0 and redis.call('EXISTS', quota_key) == 1 then
      redis.call('DECRBY', quota_key, refund)
    end
    local back = tonumber(f[6] or '0') - (spent - tonumber(f[7] or '0'))
    if f[8] and back ~= 0 and redis.call('EXISTS', f[8]) == 1 then
      redis.call('DECRBY', f[8], back)
    end
  end
  redis.call('EXPIRE', task_key, ttl)
  redis.call('EXPIRE', user_tasks_key, ttl)
  local keep = tonumber(f[9] or '0')
  if status == 'completed' or keep <= 0 then
    redis.call('DEL', checkpoint_key)
    forget_memory(memory_key, memory_retain)
  else
    redis.call('EXPIRE', checkpoint_key, keep)
    if memory_key ~= nil and memory_retain ~= nil and memory_retain ~= '' then
      redis.call('EXPIRE', memory_key, math.max(keep, tonumber(memory_retain)))
    end
  end
  -- Every end of a run frees the owner's active-task slot.
  redis.call('SREM', active_key, task_id())
  -- and, with the same write, schedules the end's webhook: no way to end a task loses it.
  if f[3] then
    local t = redis.call('TIME')
    redis.call('ZADD', webhooks_due_key, 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), task_id())
    redis.call('HSET', task_key, 'webhook_state', 'pending')
  end
  if status == 'incomplete' then
    emit(ttl, 'status', status, 'reason', err, 'at', now)
  else
    emit(ttl, 'status', status, 'at', now)
  end
end
