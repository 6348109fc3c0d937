-- Revoke a token id or every token of a subject issued before a cut-off.
--
-- KEYS[1]  sorted set of revoked token ids, score = token expiry (unix s)
-- KEYS[2]  sorted set of subject cut-offs, score = cut-off (unix s)
-- KEYS[3]  version counter that workers poll to see a change
-- ARGV[1]  "jti" or "subject"
-- ARGV[2]  the token id or the subject
-- ARGV[3]  for "jti": the token's expiry; for "subject": the cut-off (unix s)
-- ARGV[4]  for "subject": seconds to keep the cut-off (the longest token
--          lifetime accepted); for "jti": unused
--
-- Entries past their use are pruned here, and every key gets a TTL that
-- covers its longest-lived entry, so nothing outlives its purpose.
-- Returns the new version.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local kind = ARGV[1]
local member = ARGV[2]
local score = tonumber(ARGV[3])

local function extend(key, seconds)
  local ttl = redis.call('TTL', key)
  if ttl < seconds then
    redis.call('EXPIRE', key, seconds)
  end
end

if kind == 'jti' then
  local keep = math.floor(score - now) + 1
  if keep > 0 then
    local old = redis.call('ZSCORE', KEYS[1], member)
    if not old or tonumber(old) < score then
      redis.call('ZADD', KEYS[1], score, member)
    end
    extend(KEYS[1], keep)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
else
  local retention = tonumber(ARGV[4])
  local old = redis.call('ZSCORE', KEYS[2], member)
  if not old or tonumber(old) < score then
    redis.call('ZADD', KEYS[2], score, member)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - retention))
  extend(KEYS[2], math.floor(score - now + retention) + 1)
end

local version = redis.call('INCR', KEYS[3])
-- The counter outlives both sets by a day so that a worker never sees it
-- restart from 1 while it still holds an old snapshot.
extend(KEYS[3], math.max(redis.call('TTL', KEYS[1]), redis.call('TTL', KEYS[2]), 0) + 86400)
return version
