-- Write a terminal status (or `incomplete`: stopped at a budget, resumable), fenced by the
-- attempt.
-- KEYS: the prelude's, then:
local memory_key = KEYS[8]
-- '*' = unfenced, for invalid envelopes
local fence = ARGV[1]
-- terminal, or 'incomplete' (then error_text is its reason: max_tokens | max_ticks)
local status = ARGV[2]
-- JSON or ''
local result = ARGV[3]
-- '' = none
local error_text = ARGV[4]
-- '' = keep what progress recorded
local ticks_used = ARGV[5]
local now = ARGV[6]
local ttl = ARGV[7]
-- '' leave, '0' delete, n keep n more seconds
local memories = ARGV[8]
-- '' = keep what progress recorded
local tokens_used = ARGV[9]
-- Returns 1 when written, 0 when refused (already terminal, or fenced), -1 when the record is gone.
-- A refused write touches nothing, the memories included.

local f = redis.call('HMGET', task_key, 'status', 'attempt')
local st = f[1]
if not st then
  return -1
end
if is_terminal(st) then
  return 0
end
if fence ~= '*' and (st ~= 'in_progress' or f[2] ~= fence) then
  return 0
end
local used = nil
if ticks_used ~= '' then
  used = tonumber(ticks_used)
end
local spent = nil
if tokens_used ~= '' then
  spent = tonumber(tokens_used)
end
finish(status, result, error_text, used, now, ttl, memory_key, memories, spent)
return 1
