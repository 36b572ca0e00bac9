-- The reconciler ends a task that was not started before its `expires_after_seconds`
-- passed: `failed` ("expired in queue"), its whole reservation refunded. The agent makes the
-- same check at the claim; this closes the tasks no agent reached in time.
-- KEYS: the prelude's, then:
local expiring_key = KEYS[8]
local now = ARGV[1]
local ttl = ARGV[2]
-- Returns 'expired', or 'moved' when it started, ended or is gone (it just leaves the set).

redis.call('ZREM', expiring_key, task_id())
local f = redis.call('HMGET', task_key, 'status', 'attempt')
if f[1] ~= 'in_queue' or tonumber(f[2] or '0') > 0 then
  return 'moved'
end
finish('failed', nil, EXPIRED_IN_QUEUE, 0, now, ttl)
return 'expired'
