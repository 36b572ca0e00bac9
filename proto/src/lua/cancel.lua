-- A client cancels: a queued task ends at once, a running one is asked to stop.
-- KEYS: the prelude's, then:
local parked_key = KEYS[8]
local now = ARGV[1]
local ttl = ARGV[2]
-- Returns {'missing'} | {'terminal', status} | {'cancelled'} | {'requested'}

local st = redis.call('HGET', task_key, 'status')
if not st then
  return {'missing'}
end
if is_terminal(st) then
  return {'terminal', st}
end
redis.call('HSET', task_key, 'cancel_requested', '1', 'updated_at', now)
-- No run holds it: waiting in the queue, or parked on its owner's decision. A task that ran
-- before (resumed or parked) keeps the ticks it used and returns what it had gathered.
if st == 'in_queue' or st == 'requires_action' then
  local f = redis.call('HMGET', task_key, 'attempt', 'partial')
  if tonumber(f[1] or '0') == 0 then
    finish('cancelled', CANCELLED_UNSTARTED, nil, 0, now, ttl)
  else
    finish('cancelled', f[2] or CANCELLED_INTERRUPTED, nil, nil, now, ttl)
  end
  redis.call('ZREM', parked_key, task_id())
  redis.call('HDEL', task_key, 'pending_action', 'pending_schema')
  return {'cancelled'}
end
-- Stopped at a budget: ends with the result it stopped with (settled when it stopped).
if st == 'incomplete' then
  finish('cancelled', nil, nil, nil, now, ttl)
  return {'cancelled'}
end
emit(ttl, 'status', st, 'cancel_requested', '1', 'at', now)
return {'requested'}
