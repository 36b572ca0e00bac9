-- The broker confirmed these envelopes (one call for a batch of them; see group_commit.rs):
-- take each task out of the unconfirmed index so the reconciler leaves it alone, and turn
-- its idempotency claim (if any) from pending to done so replays return the task instead of 409.
local unconfirmed_key = KEYS[1]
-- KEYS[2..]: the task records; ARGV: their task ids, in the same order (ARGV[i] is KEYS[i + 1]'s).
local ids = ARGV
-- Returns one integer per task: 0 when the record was already closed without running (the
-- undo or the reconciler got there first: the client must not be told it was accepted), else 1.

local out = {}
for i, id in ipairs(ids) do
  local task = KEYS[i + 1]
  redis.call('ZREM', unconfirmed_key, id)
  local st = redis.call('HGET', task, 'status')
  if st == 'failed' and redis.call('HGET', task, 'attempt') == '0' then
    out[i] = 0
  else
    if st then
      redis.call('HSET', task, 'confirmed', '1')
      -- The claim's name is on the record (written by submit.lua in the same step as the claim).
      local claim_key = redis.call('HGET', task, 'idem_key')
      if claim_key then
        local claim = redis.call('GET', claim_key)
        if claim and string.match(claim, '^pending:([^:]+):') == id then
          redis.call('SET', claim_key, 'done:' .. string.sub(claim, 9), 'KEEPTTL')
        end
      end
    end
    out[i] = 1
  end
end
return out
