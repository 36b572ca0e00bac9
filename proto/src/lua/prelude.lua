-- Shared by every task script (prepended by proto::store).
-- Finishing scripts take KEYS: [1] task, [2] quota, [3] events, [4] checkpoint, [5] user tasks,
-- [6] the owner's active-task set, [7] the webhooks due; the agent's (claim, finish) also
-- [8] the task's Redis memories.

-- The task id is the last part of the record key (a UUID has no ':').
local function task_id()
  return string.match(KEYS[1], '([^:]+)$')
end

local function is_terminal(st)
  return st == 'completed' or st == 'failed' or st == 'cancelled'
end

local function emit(ttl, ...)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', ...)
  redis.call('EXPIRE', KEYS[3], ttl)
end

-- The result of a task cancelled before any agent ran it: the same shape as a task
-- cancelled while running (which carries what it had gathered), so clients read one shape.
local CANCELLED_UNSTARTED = '{"success":false,"deliverables":[],"notes":"cancelled before it started","sources":[]}'
-- Cancelled while its run was interrupted (the agent died after the cancel request).
local CANCELLED_INTERRUPTED = '{"success":false,"deliverables":[],"notes":"cancelled while its run was interrupted","sources":[]}'

-- A submission that was never enqueued frees its idempotency claim: the client was told
-- (or, its gateway gone, never told) that nothing was accepted, so a retry with the same key
-- must be a fresh attempt.
local function release_claim()
  local claim_key = redis.call('HGET', KEYS[1], 'idem_key')
  if claim_key then
    local claim = redis.call('GET', claim_key)
    if claim and string.match(claim, '^%a+:([^:]+):') == task_id() then
      redis.call('DEL', claim_key)
    end
  end
end

-- The task's memories in Redis (KEYS[8], passed by the agent's scripts only): `retain` ''
-- or nil leaves them (no Redis memory store, or not the agent), '0' deletes them, n keeps
-- them n more seconds (MEMORY_RETENTION_SECONDS).
local function forget_memory(retain)
  if KEYS[8] == nil or retain == nil or retain == '' then
    return
  end
  if retain == '0' then
    redis.call('DEL', KEYS[8])
  else
    redis.call('EXPIRE', KEYS[8], retain)
  end
end

-- Ends the task: terminal status, refund of the unused reservation, TTLs refreshed,
-- checkpoint dropped, memories forgotten (see forget_memory). The caller has already
-- checked that the transition is allowed.
local function finish(status, result, err, ticks_used, now, ttl, memory_retain)
  local f = redis.call('HMGET', KEYS[1], 'max_ticks', 'ticks_used', 'webhook_url')
  local max_ticks = tonumber(f[1] or '0')
  local used = ticks_used
  if used == nil then
    used = tonumber(f[2] or '0')
  end
  redis.call('HSET', KEYS[1], 'status', status, 'updated_at', now, 'finished_at', now, 'ticks_used', used)
  if result ~= nil and result ~= '' then
    redis.call('HSET', KEYS[1], 'result', result)
  end
  if err ~= nil and err ~= '' then
    redis.call('HSET', KEYS[1], 'error', err)
  end
  local refund = max_ticks - used
  -- A counter that already expired belongs to a past day: nothing to give back.
  if refund > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('DECRBY', KEYS[2], refund)
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
  redis.call('DEL', KEYS[4])
  -- Every terminal transition frees the owner's active-task slot.
  redis.call('SREM', KEYS[6], task_id())
  -- and, with the same write, schedules the end's webhook: no way to end a task loses it.
  if f[3] then
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[7], 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), task_id())
    redis.call('HSET', KEYS[1], 'webhook_state', 'pending')
  end
  forget_memory(memory_retain)
  emit(ttl, 'status', status, 'at', now)
end
