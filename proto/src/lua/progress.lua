-- Record a finished tick and its checkpoint, fenced by the attempt.
-- KEYS: the prelude's.
local attempt = ARGV[1]
local tick = ARGV[2]
local ticks_used = ARGV[3]
local now = ARGV[4]
local action = ARGV[5]
local checkpoint = ARGV[6]
local ttl = ARGV[7]
-- '' or the MCP tool the tick called, and what it returned (clipped)
local tool = ARGV[8]
local output = ARGV[9]
-- the task's tokens so far (prompt + completion), for its budget's settlement
local tokens_used = ARGV[10]
-- Returns {code, messages}: code -2 when the record is gone, -1 when fenced (another
-- delivery owns the task), 1 when cancel was requested, else 0; messages = how many the
-- owner has sent, so the run reads new ones only when there are some.

local f = redis.call('HMGET', task_key, 'status', 'attempt', 'cancel_requested', 'messages')
local st = f[1]
if not st then
  return {-2, 0}
end
if st ~= 'in_progress' or f[2] ~= attempt then
  return {-1, 0}
end
local messages = tonumber(f[4] or '0')
redis.call('HSET', task_key, 'tick', tick, 'ticks_used', ticks_used, 'tokens_used', tokens_used, 'updated_at', now)
redis.call('SET', checkpoint_key, checkpoint, 'EX', ttl)
if tool ~= '' then
  emit(ttl, 'status', 'in_progress', 'tick', tick, 'action', action, 'tool', tool, 'output', output, 'attempt', attempt,
    'at', now)
else
  emit(ttl, 'status', 'in_progress', 'tick', tick, 'action', action, 'attempt', attempt, 'at', now)
end
if f[3] == '1' then
  return {1, messages}
end
return {0, messages}
