-- ARGV: [1] now, [2] record ttl
-- Returns {'missing'} | {'terminal', status} | {'cancelled'} | {'requested'}
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  return {'missing'}
end
if is_terminal(st) then
  return {'terminal', st}
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
if st == 'in_queue' then
  finish('cancelled', CANCELLED_UNSTARTED, nil, 0, ARGV[1], ARGV[2])
  return {'cancelled'}
end
emit(ARGV[2], 'status', st, 'cancel_requested', '1', 'at', ARGV[1])
return {'requested'}
