-- The owner (or the expiry) answers a parked call: the decision is written for the run that
-- resumes, the task goes back to `in_queue` with the next enqueue number, and it is marked
-- resuming until the caller's publish is confirmed (the reconciler publishes again what
-- stays marked). The owner was checked by the caller.
-- KEYS: the prelude's, then:
local parked_key = KEYS[8]
local resuming_key = KEYS[9]
local call_id = ARGV[1]
-- JSON {call_id, decision, arguments?}
local decision = ARGV[2]
local verdict = ARGV[3]
local now = ARGV[4]
local now_ms = ARGV[5]
local ttl = ARGV[6]
-- Returns {'missing'} | {'terminal', status} | {'decided'} (this call was already answered)
--   | {'unknown'} (no such pending call) | {'resumed', seq}

local f = redis.call('HMGET', task_key, 'status', 'pending_action', 'decided_call')
local st = f[1]
if not st then
  return {'missing'}
end
if f[3] == call_id then
  return {'decided'}
end
if is_terminal(st) then
  return {'terminal', st}
end
if st ~= 'requires_action' or not f[2] or cjson.decode(f[2])['call_id'] ~= call_id then
  return {'unknown'}
end
local seq = redis.call('HINCRBY', task_key, 'seq', 1)
redis.call('HSET', task_key, 'status', 'in_queue', 'decision', decision, 'decided_call', call_id, 'deliveries', 0,
  'updated_at', now)
redis.call('HDEL', task_key, 'pending_action', 'pending_schema')
redis.call('ZREM', parked_key, task_id())
redis.call('ZADD', resuming_key, now_ms, task_id())
redis.call('EXPIRE', task_key, ttl)
emit(ttl, 'status', 'in_queue', 'call_id', call_id, 'decision', verdict, 'at', now)
return {'resumed', seq}
