-- The admission checks a submission and a re-admission share (prepended to submit.lua and
-- readmit.lua by proto::store). Each answers nil when the task may go on, or the refusal.

-- GCRA: one admission per `emission_ms`, `burst` at once, on Redis's clock, so every gateway
-- replica sees the same time. Spends the slot when it answers nil.
local function admit_rate(rate_key, emission_ms, burst)
  if emission_ms <= 0 then
    return nil
  end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local tat = math.max(tonumber(redis.call('GET', rate_key) or '0'), now_ms)
  local new_tat = tat + emission_ms
  local allow_at = new_tat - emission_ms * burst
  if allow_at > now_ms then
    return {'rate_limited', tostring(allow_at - now_ms)}
  end
  redis.call('SET', rate_key, new_tat, 'PX', new_tat - now_ms)
  return nil
end

-- Active cap. Ids of runs that ended are removed by the finishing scripts; a record that
-- expired or was lost without finishing would hold a slot forever, so at the cap the set is
-- checked against the records before refusing.
local function admit_active(active_key, max_active, task_prefix)
  if max_active <= 0 or redis.call('SCARD', active_key) < max_active then
    return nil
  end
  for _, member in ipairs(redis.call('SMEMBERS', active_key)) do
    local st = redis.call('HGET', task_prefix .. member, 'status')
    if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'incomplete' then
      redis.call('SREM', active_key, member)
    end
  end
  local n = redis.call('SCARD', active_key)
  if n >= max_active then
    return {'too_many_active', tostring(n)}
  end
  return nil
end

-- A daily quota (ticks or tokens; `limit` <= 0: unlimited): `refusal` with what is left when
-- `cost` does not fit.
local function admit_quota(key, limit, cost, refusal)
  if limit <= 0 then
    return nil
  end
  local used = tonumber(redis.call('GET', key) or '0')
  if used + cost > limit then
    return {refusal, tostring(math.max(limit - used, 0))}
  end
  return nil
end
