-- The reconciler closes a submission whose publish was never confirmed (its gateway died,
-- or its undo never got through), once the publish can no longer be in flight.
-- KEYS: the prelude's, then the unconfirmed index last (it stays last when the prelude grows).
local unconfirmed_key = KEYS[#KEYS]
local error_text = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
local id = ARGV[4]
-- Returns 'closed', or 'skipped' (confirmed, claimed or already ended), or 'missing'.

-- Out of the index already: confirm.lua took it out (the broker confirmed), or the undo did
-- (and closed it).
local unconfirmed = redis.call('ZREM', unconfirmed_key, id) == 1
local f = redis.call('HMGET', task_key, 'status', 'attempt')
if not f[1] then
  return 'missing'
end
if not unconfirmed or f[1] ~= 'in_queue' or f[2] ~= '0' then
  return 'skipped'
end
finish('failed', nil, error_text, 0, now, ttl)
release_claim()
return 'closed'
