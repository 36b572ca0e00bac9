-- The submission behind an idempotency claim was confirmed by the broker: replays now get
-- the task instead of 409. Only the claim this submission made is touched.
-- KEYS: [1] idempotency claim; ARGV: [1] pending value, [2] done value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
