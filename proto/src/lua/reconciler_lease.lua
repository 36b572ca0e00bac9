-- Take the reconciler lease when free, or extend it when `holder` has it.
local lease_key = KEYS[1]
local holder = ARGV[1]
local ttl_ms = ARGV[2]
-- Returns 1 while `holder` has the lease, else 0.

if redis.call('GET', lease_key) == holder then
  return redis.call('PEXPIRE', lease_key, ttl_ms)
end
if redis.call('SET', lease_key, holder, 'NX', 'PX', ttl_ms) then
  return 1
end
return 0
