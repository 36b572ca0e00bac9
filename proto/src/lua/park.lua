-- A run parks its task on a tool call that needs the owner's approval: the checkpoint
-- (with the pending call) and the status in one step, fenced by the attempt. The agent then
-- acks its delivery: a parked task holds no worker and no message. Its active-task slot
-- stays taken (the cap counts it); its quota reservation stays as it was.
-- KEYS: the prelude's, then:
local parked_key = KEYS[8]
local attempt = ARGV[1]
local now = ARGV[2]
local checkpoint = ARGV[3]
local ttl = ARGV[4]
-- JSON {call_id, tool, arguments, expires_at}
local pending = ARGV[5]
-- JSON of the tool's input schema
local schema = ARGV[6]
-- JSON of what a cancel while parked returns
local partial = ARGV[7]
local expires_ms = ARGV[8]
local call_id = ARGV[9]
-- Returns -2 when the record is gone, -1 when fenced, 1 when a cancel was requested
-- (nothing written: the run ends cancelled instead), 0 when parked.

local f = redis.call('HMGET', task_key, 'status', 'attempt', 'cancel_requested', 'webhook_url')
local st = f[1]
if not st then
  return -2
end
if st ~= 'in_progress' or f[2] ~= attempt then
  return -1
end
if f[3] == '1' then
  return 1
end
redis.call('HSET', task_key, 'status', 'requires_action', 'pending_action', pending, 'pending_schema', schema,
  'partial', partial, 'updated_at', now)
redis.call('SET', checkpoint_key, checkpoint, 'EX', ttl)
redis.call('ZADD', parked_key, expires_ms, task_id())
emit(ttl, 'status', 'requires_action', 'call_id', call_id, 'attempt', attempt, 'at', now)
if f[4] then
  local t = redis.call('TIME')
  redis.call('ZADD', webhooks_due_key, 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
    task_id() .. '/action')
end
return 0
