-- The broker confirmed the envelope: take the task out of the unconfirmed index so the
-- reconciler leaves it alone, and turn its idempotency claim (if any) from pending to done
-- so replays return the task instead of 409.
-- KEYS: [1] task, [2] unconfirmed index. ARGV: [1] task id
-- Returns 0 when the record was already closed without running (the undo or the reconciler
-- got there first: the client must not be told it was accepted), else 1.
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'failed' and redis.call('HGET', KEYS[1], 'attempt') == '0' then
  return 0
end
if st then
  redis.call('HSET', KEYS[1], 'confirmed', '1')
  -- The claim's name is on the record (written by submit.lua in the same step as the claim).
  local claim_key = redis.call('HGET', KEYS[1], 'idem_key')
  if claim_key then
    local claim = redis.call('GET', claim_key)
    if claim and string.match(claim, '^pending:([^:]+):') == ARGV[1] then
      redis.call('SET', claim_key, 'done:' .. string.sub(claim, 9), 'KEEPTTL')
    end
  end
end
return 1
