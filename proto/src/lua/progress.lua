-- Record a finished tick and its checkpoint, fenced by the attempt.
-- ARGV: [1] attempt, [2] tick, [3] ticks used, [4] now, [5] action, [6] checkpoint, [7] record ttl
-- Returns -2 when the record is gone, -1 when fenced (another delivery owns the task),
-- 1 when cancel was requested, else 0.
local f = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'cancel_requested')
local st = f[1]
if not st then
  return -2
end
if st ~= 'in_progress' or f[2] ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'tick', ARGV[2], 'ticks_used', ARGV[3], 'updated_at', ARGV[4])
redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7])
emit(ARGV[7], 'status', 'in_progress', 'tick', ARGV[2], 'action', ARGV[5], 'attempt', ARGV[1], 'at', ARGV[4])
if f[3] == '1' then
  return 1
end
return 0
