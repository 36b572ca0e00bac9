-- The reconciler closes the record of a dead-lettered message that no agent ended (the
-- broker dead-letters silently, e.g. when Redis was down across every delivery). Ticks
-- already recorded stay charged; the rest of the reservation is refunded.
-- KEYS: the prelude's.
-- '' = unknown: the record's attempt count
local deliveries = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
-- Returns 'closed', 'terminal' or 'missing'.

local st = redis.call('HGET', task_key, 'status')
if not st then
  return 'missing'
end
if is_terminal(st) then
  return 'terminal'
end
local n = deliveries
if n == '' then
  -- A rejected message was delivered at least once, claimed or not.
  n = math.max(tonumber(redis.call('HGET', task_key, 'attempt') or '0'), 1)
end
finish('failed', nil, 'dead-lettered after ' .. n .. ' deliveries', nil, now, ttl)
return 'closed'
