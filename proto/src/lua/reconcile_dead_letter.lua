-- The reconciler closes the record of a dead-lettered message that no agent ended (the
-- broker dead-letters silently, e.g. when Redis was down across every delivery). Ticks
-- already recorded stay charged; the rest of the reservation is refunded.
-- ARGV: [1] deliveries ('' = unknown: the record's attempt count), [2] now, [3] record ttl
-- Returns 'closed', 'terminal' or 'missing'.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  return 'missing'
end
if is_terminal(st) then
  return 'terminal'
end
local n = ARGV[1]
if n == '' then
  -- A rejected message was delivered at least once, claimed or not.
  n = math.max(tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0'), 1)
end
finish('failed', nil, 'dead-lettered after ' .. n .. ' deliveries', nil, ARGV[2], ARGV[3])
return 'closed'
