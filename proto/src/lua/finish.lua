-- Write a terminal status. ARGV: [1] attempt ('*' = unfenced, for invalid envelopes),
-- [2] status, [3] result JSON or '', [4] error or '', [5] ticks used or '', [6] now, [7] record ttl,
-- [8] the task's memories (KEYS[8]): '' leave, '0' delete, n keep n more seconds
-- Returns 1 when written, 0 when refused (already terminal, or fenced), -1 when the record is gone.
-- A refused write touches nothing, the memories included.
local f = redis.call('HMGET', KEYS[1], 'status', 'attempt')
local st = f[1]
if not st then
  return -1
end
if is_terminal(st) then
  return 0
end
if ARGV[1] ~= '*' and (st ~= 'in_progress' or f[2] ~= ARGV[1]) then
  return 0
end
local used = nil
if ARGV[5] ~= '' then
  used = tonumber(ARGV[5])
end
finish(ARGV[2], ARGV[3], ARGV[4], used, ARGV[6], ARGV[7], ARGV[8])
return 1
