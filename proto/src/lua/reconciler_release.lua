-- Give the reconciler lease up, if `holder` has it.
local lease_key = KEYS[1]
local holder = ARGV[1]
-- Returns 1 when released, else 0.

if redis.call('GET', lease_key) == holder then
  return redis.call('DEL', lease_key)
end
return 0
