-- Undo a submission whose publish was not confirmed: no record, no listing, quota back.
-- KEYS: [1] task, [2] user tasks, [3] quota, [4] events
-- ARGV: [1] task id, [2] cost
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DECRBY', KEYS[3], ARGV[2])
end
return 1
