-- The reconciler closes a submission whose publish was never confirmed (its gateway died,
-- or its undo never got through), once the publish can no longer be in flight.
-- KEYS: the prelude's, then the unconfirmed index last (it stays last when the prelude grows).
local unconfirmed_key = KEYS[#KEYS]
local error_text = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
local id = ARGV[4]
-- Returns 'closed', or 'skipped' (confirmed, claimed or already ended), or 'missing'.

redis.call('ZREM', unconfirmed_key, id)
local st = redis.call('HGET', task_key, 'status')
if not st then
  return 'missing'
end
if st ~= 'in_queue' or redis.call('HGET', task_key, 'attempt') ~= '0' or redis.call('HGET', task_key, 'confirmed') == '1' then
  return 'skipped'
end
finish('failed', nil, error_text, 0, now, ttl)
release_claim()
return 'closed'
