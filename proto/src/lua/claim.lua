-- A delivery takes the task over; its attempt number becomes the fencing token.
-- KEYS: the prelude's, the quota, user tasks and active set named from the owner the caller
-- expects (expected_user, expected_quota_key), then:
local memory_key = KEYS[8]
local worker_id = ARGV[1]
local now = ARGV[2]
local max_deliveries = tonumber(ARGV[3])
local ttl = ARGV[4]
local expected_user = ARGV[5]
-- '' = none
local expected_quota_key = ARGV[6]
-- '' leave, '0' delete, n keep n seconds
local memories = ARGV[7]
-- the envelope's enqueue number
local seq = tonumber(ARGV[8])
-- Returns {'missing'} | {'terminal', status} | {'gave_up', attempts}
--   | {'stale'} (a copy of an earlier enqueue: ack it unrun) | {'parked'} (waits for its
--     owner, parked on a call or stopped `incomplete`: this delivery was already handed
--     back, or is a late redelivery) | {'terminal', 'failed'} also when it expired in the
--     queue (never started before its `expires_at`)
--   | {'rekey', user id, quota key} (the owner keys were wrong and this would end the task:
--     nothing written, call again with these)
--   | {'claimed', attempt, has checkpoint (0|1), checkpoint or '', field, value, ...}: the
--     record as the claim left it and the checkpoint the new attempt resumes from, read in
--     the same step that made it the owner.

local h = read_record()
if not h then
  return {'missing'}
end
local st = h['status']
if is_terminal(st) then
  -- The run that completed it may have died before its memories were forgotten. (A task
  -- that failed or was cancelled keeps them with its checkpoint, for a retry.)
  if st == 'completed' then
    forget_memory(memory_key, memories)
  end
  return {'terminal', st}
end
if tonumber(h['seq'] or '0') > seq then
  return {'stale'}
end
if st == 'requires_action' or st == 'incomplete' then
  return {'parked'}
end
local attempt = tonumber(h['attempt'] or '0')
-- Deliveries since the task was last put on the queue (a resumed task's earlier runs do not
-- count against the limit, which is the broker's per message).
local deliveries = tonumber(h['deliveries'] or h['attempt'] or '0')
local cancel = h['cancel_requested'] == '1'
local give_up = deliveries >= max_deliveries
local expired = false
if h['expires_at_ms'] and attempt == 0 then
  local t = redis.call('TIME')
  expired = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(h['expires_at_ms'])
end
if (cancel or give_up or expired) and ((h['user_id'] or '') ~= expected_user or (h['quota_key'] or '') ~= expected_quota_key) then
  return {'rekey', h['user_id'] or '', h['quota_key'] or ''}
end
if cancel then
  finish('cancelled', CANCELLED_INTERRUPTED, nil, nil, now, ttl, memory_key, memories)
  return {'terminal', 'cancelled'}
end
if expired then
  finish('failed', nil, EXPIRED_IN_QUEUE, 0, now, ttl, memory_key, memories)
  return {'terminal', 'failed'}
end
if give_up then
  finish('failed', nil, 'gave up after ' .. deliveries .. ' deliveries', nil, now, ttl, memory_key, memories)
  return {'gave_up', deliveries}
end
attempt = attempt + 1
redis.call('HSET', task_key, 'status', 'in_progress', 'attempt', attempt, 'deliveries', deliveries + 1,
  'worker_id', worker_id, 'updated_at', now)
h['status'] = 'in_progress'
h['attempt'] = tostring(attempt)
h['worker_id'] = worker_id
h['updated_at'] = now
if not h['started_at'] then
  redis.call('HSET', task_key, 'started_at', now)
  h['started_at'] = now
end
emit(ttl, 'status', 'in_progress', 'attempt', attempt, 'at', now)
local cp = redis.call('GET', checkpoint_key)
local reply = {'claimed', attempt, cp and 1 or 0, cp or ''}
for k, v in pairs(h) do
  reply[#reply + 1] = k
  reply[#reply + 1] = v
end
return reply
