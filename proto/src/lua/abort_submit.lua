-- A submission whose envelope the broker did not confirm: fail it and refund the whole
-- reservation, but only while no agent has touched it (a publish that timed out may still
-- have landed and been claimed; then the agent owns the task).
-- KEYS: the prelude's, then the unconfirmed index last (KEYS[#KEYS]: it stays right when the
-- prelude grows). ARGV: [1] error, [2] now, [3] record ttl, [4] task id
redis.call('ZREM', KEYS[#KEYS], ARGV[4])
if redis.call('HGET', KEYS[1], 'status') ~= 'in_queue' or redis.call('HGET', KEYS[1], 'attempt') ~= '0' then
  return 0
end
finish('failed', nil, ARGV[1], 0, ARGV[2], ARGV[3])
release_claim()
return 1
