-- Create the record for a valid envelope that arrived without one (published by the
-- Python Euglena or another producer). Never touches an existing record. An envelope
-- without a user id has no owner: it is not listed under any user.
local task_key = KEYS[1]
local user_tasks_key = KEYS[2]
local events_key = KEYS[3]
local ttl = ARGV[1]
local created_ms = ARGV[2]
local id = ARGV[3]
local now = ARGV[4]
-- ARGV[5..]: the record's fields, name then value.
local FIELDS = 5
-- Returns 1 when created, 0 when a record exists.

if redis.call('EXISTS', task_key) == 1 then
  return 0
end
redis.call('HSET', task_key, unpack(ARGV, FIELDS))
redis.call('EXPIRE', task_key, ttl)
if redis.call('HGET', task_key, 'user_id') ~= '' then
  redis.call('ZADD', user_tasks_key, created_ms, id)
  redis.call('EXPIRE', user_tasks_key, ttl)
end
redis.call('XADD', events_key, 'MAXLEN', '~', '1000', '*', 'status', 'in_queue', 'at', now)
redis.call('EXPIRE', events_key, ttl)
return 1
