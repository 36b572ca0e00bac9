-- The broker confirmed these envelopes (one call for a batch of them; see group_commit.rs):
-- take each task out of the unconfirmed index so the reconciler leaves it alone (being out
-- of the index is what "confirmed" means: reconcile_unconfirmed.lua), and turn its
-- idempotency claim (if any) from pending to done so replays return the task instead of 409.
local unconfirmed_key = KEYS[1]
-- KEYS[2..n + 1]: the task records; ARGV[1..n]: their ids, in the same order; ARGV[n + 1..2n]:
-- their idempotency claims' names ('' = none).
local n = #KEYS - 1
-- Returns one integer per task: 0 when the record was already closed without running (the
-- undo or the reconciler got there first: the client must not be told it was accepted), else 1.

local out = {}
if n == 0 then
  return out
end
-- Every closer takes the id out of the index first, in the same step as it closes. So when
-- every id was still in it, no record was closed and none needs reading.
local closed_some = redis.call('ZREM', unconfirmed_key, unpack(ARGV, 1, n)) < n
for i = 1, n do
  local id = ARGV[i]
  out[i] = 1
  if closed_some then
    local f = redis.call('HMGET', KEYS[i + 1], 'status', 'attempt')
    if f[1] == 'failed' and f[2] == '0' then
      out[i] = 0
    end
  end
  local claim_key = ARGV[n + i]
  if out[i] == 1 and claim_key ~= '' then
    local claim = redis.call('GET', claim_key)
    if claim and string.match(claim, '^pending:([^:]+):') == id then
      redis.call('SET', claim_key, 'done:' .. string.sub(claim, 9), 'KEEPTTL')
    end
  end
end
return out
