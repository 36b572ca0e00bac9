-- The reconciler takes a dead letter: it indexes it for the operators (`GET
-- /admin/dead-letters`), and closes the record of a message that no agent ended (the broker
-- dead-letters silently, e.g. when Redis was down across every delivery). Ticks already
-- recorded stay charged; the rest of the reservation is refunded. A task waiting on its
-- owner (parked, or incomplete) is not closed: the dead copy is an older enqueue's.
-- KEYS: the prelude's, then:
local dead_letters_key = KEYS[8]
local dead_letter_key = KEYS[9]
-- '' = unknown: the record's attempt count
local deliveries = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
-- JSON of what the message's headers said (reason, count, first death), for the index
local info = ARGV[4]
local now_ms = ARGV[5]
-- Returns 'closed', 'terminal' or 'missing'.

local st = redis.call('HGET', task_key, 'status')
if not st then
  return 'missing'
end
-- The index forgets what outlived the records (whose tasks nothing could redrive).
redis.call('ZREMRANGEBYSCORE', dead_letters_key, '-inf', '(' .. (tonumber(now_ms) - tonumber(ttl) * 1000))
redis.call('ZADD', dead_letters_key, now_ms, task_id())
redis.call('SET', dead_letter_key, info, 'EX', ttl)
if is_terminal(st) or st == 'requires_action' or st == 'incomplete' then
  return 'terminal'
end
local n = deliveries
if n == '' then
  -- A rejected message was delivered at least once, claimed or not.
  n = math.max(tonumber(redis.call('HGET', task_key, 'attempt') or '0'), 1)
end
finish('failed', nil, 'dead-lettered after ' .. n .. ' deliveries', nil, now, ttl)
return 'closed'
