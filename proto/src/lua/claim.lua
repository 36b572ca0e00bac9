-- A delivery takes the task over; its attempt number becomes the fencing token.
-- ARGV: [1] worker id, [2] now, [3] max deliveries, [4] record ttl
-- Returns {'missing'} | {'terminal', status} | {'gave_up', attempts} | {'claimed', attempt}
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  return {'missing'}
end
if is_terminal(st) then
  return {'terminal', st}
end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  finish('cancelled', CANCELLED_INTERRUPTED, nil, nil, ARGV[2], ARGV[4])
  return {'terminal', 'cancelled'}
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
if attempt >= tonumber(ARGV[3]) then
  finish('failed', nil, 'gave up after ' .. attempt .. ' deliveries', nil, ARGV[2], ARGV[4])
  return {'gave_up', attempt}
end
attempt = attempt + 1
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'attempt', attempt, 'worker_id', ARGV[1], 'updated_at', ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
end
emit(ARGV[4], 'status', 'in_progress', 'attempt', attempt, 'at', ARGV[2])
return {'claimed', attempt}
