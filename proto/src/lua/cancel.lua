-- A client cancels: a queued task ends at once, a running one is asked to stop.
-- KEYS: the prelude's.
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
if st == 'in_queue' then
  finish('cancelled', CANCELLED_UNSTARTED, nil, 0, now, ttl)
  return {'cancelled'}
end
emit(ttl, 'status', st, 'cancel_requested', '1', 'at', now)
return {'requested'}
