-- The reconciler closes a submission whose publish was never confirmed (its gateway died,
-- or its undo never got through), once the publish can no longer be in flight.
-- KEYS: the prelude's, then the unconfirmed index last (KEYS[#KEYS]: it stays right when the
-- prelude grows). ARGV: [1] error, [2] now, [3] record ttl, [4] task id
-- Returns 'closed', or 'skipped' (confirmed, claimed or already ended), or 'missing'.
redis.call('ZREM', KEYS[#KEYS], ARGV[4])
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  return 'missing'
end
if st ~= 'in_queue' or redis.call('HGET', KEYS[1], 'attempt') ~= '0' or redis.call('HGET', KEYS[1], 'confirmed') == '1' then
  return 'skipped'
end
finish('failed', nil, ARGV[1], 0, ARGV[2], ARGV[3])
release_claim()
return 'closed'
