-- A submission whose envelope the broker did not confirm: fail it and refund the whole
-- reservation, but only while no agent has touched it (a publish that timed out may still
-- have landed and been claimed; then the agent owns the task).
-- KEYS: the prelude's, then the unconfirmed index last (it stays last when the prelude grows).
local unconfirmed_key = KEYS[#KEYS]
local error_text = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
local id = ARGV[4]
-- Returns 1 when aborted, 0 when the task was already claimed or ended.

redis.call('ZREM', unconfirmed_key, id)
if redis.call('HGET', task_key, 'status') ~= 'in_queue' or redis.call('HGET', task_key, 'attempt') ~= '0' then
  return 0
end
finish('failed', nil, error_text, 0, now, ttl)
release_claim()
return 1
