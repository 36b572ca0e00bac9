-- The reconciler takes over a resume whose publish was never confirmed (its gateway died,
-- or the broker did not answer): while the task is still waiting in the queue unclaimed, it
-- gets the next enqueue number, so a copy that did land late is stale and acked unrun.
local task_key = KEYS[1]
local resuming_key = KEYS[2]
local id = ARGV[1]
local now_ms = ARGV[2]
-- Returns the enqueue number to publish with, or 0 when the task moved on (claimed,
-- parked again, ended, gone): then it just leaves the set.

local st = redis.call('HGET', task_key, 'status')
if st ~= 'in_queue' then
  redis.call('ZREM', resuming_key, id)
  return 0
end
redis.call('ZADD', resuming_key, now_ms, id)
return redis.call('HINCRBY', task_key, 'seq', 1)
