-- Create the record for a valid envelope that arrived without one (published by the
-- Python Euglena or another producer). Never touches an existing record. An envelope
-- without a user id has no owner: it is not listed under any user.
-- KEYS: [1] task, [2] user tasks, [3] events
-- ARGV: [1] record ttl, [2] created ms, [3] task id, [4] now, [5..] record fields
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[1], 'user_id') ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1
