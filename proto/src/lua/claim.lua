-- A delivery takes the task over; its attempt number becomes the fencing token.
-- KEYS: the prelude's, [2], [5] and [6] derived from the owner the caller expects (ARGV[5],
-- ARGV[6]), and [8] the task's Redis memories.
-- ARGV: [1] worker id, [2] now, [3] max deliveries, [4] record ttl, [5] expected user id,
-- [6] expected quota key ('' = none), [7] memories: '' leave, '0' delete, n keep n seconds
-- Returns {'missing'} | {'terminal', status} | {'gave_up', attempts}
--   | {'rekey', user id, quota key} (the owner keys were wrong and this would end the task:
--     nothing written, call again with these)
--   | {'claimed', attempt, has checkpoint (0|1), checkpoint or '', field, value, ...}: the
--     record as the claim left it and the checkpoint the new attempt resumes from, read in
--     the same step that made it the owner.
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then
  return {'missing'}
end
local h = {}
for i = 1, #flat, 2 do
  h[flat[i]] = flat[i + 1]
end
local st = h['status']
if is_terminal(st) then
  -- The run that ended it may have died before its memories were forgotten.
  forget_memory(ARGV[7])
  return {'terminal', st}
end
local attempt = tonumber(h['attempt'] or '0')
local cancel = h['cancel_requested'] == '1'
local give_up = attempt >= tonumber(ARGV[3])
if (cancel or give_up) and ((h['user_id'] or '') ~= ARGV[5] or (h['quota_key'] or '') ~= ARGV[6]) then
  return {'rekey', h['user_id'] or '', h['quota_key'] or ''}
end
if cancel then
  finish('cancelled', CANCELLED_INTERRUPTED, nil, nil, ARGV[2], ARGV[4], ARGV[7])
  return {'terminal', 'cancelled'}
end
if give_up then
  finish('failed', nil, 'gave up after ' .. attempt .. ' deliveries', nil, ARGV[2], ARGV[4], ARGV[7])
  return {'gave_up', attempt}
end
attempt = attempt + 1
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'attempt', attempt, 'worker_id', ARGV[1], 'updated_at', ARGV[2])
h['status'] = 'in_progress'
h['attempt'] = tostring(attempt)
h['worker_id'] = ARGV[1]
h['updated_at'] = ARGV[2]
if not h['started_at'] then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
  h['started_at'] = ARGV[2]
end
emit(ARGV[4], 'status', 'in_progress', 'attempt', attempt, 'at', ARGV[2])
local cp = redis.call('GET', KEYS[4])
local reply = {'claimed', attempt, cp and 1 or 0, cp or ''}
for k, v in pairs(h) do
  reply[#reply + 1] = k
  reply[#reply + 1] = v
end
return reply
