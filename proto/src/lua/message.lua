-- The owner sends a message to a task that has not ended; the run reads it at its next tick.
local task_key = KEYS[1]
local messages_key = KEYS[2]
local events_key = KEYS[3]
local text = ARGV[1]
local now = ARGV[2]
local ttl = ARGV[3]
local max_messages = tonumber(ARGV[4])
-- Returns {'missing'} | {'terminal', status} | {'full'} | {'sent', count}

local st = redis.call('HGET', task_key, 'status')
if not st then
  return {'missing'}
end
if st == 'completed' or st == 'failed' or st == 'cancelled' then
  return {'terminal', st}
end
if redis.call('LLEN', messages_key) >= max_messages then
  return {'full'}
end
local n = redis.call('RPUSH', messages_key, text)
redis.call('EXPIRE', messages_key, ttl)
redis.call('HSET', task_key, 'messages', n, 'updated_at', now)
redis.call('XADD', events_key, 'MAXLEN', '~', '1000', '*', 'message', text, 'index', n, 'at', now)
redis.call('EXPIRE', events_key, ttl)
return {'sent', n}
