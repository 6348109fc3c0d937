-- Fetch the bans added to the index since a score, with the server time.
--
-- KEYS[1]  ban index (sorted set: member "subject|until_ms", score start_ms)
-- ARGV[1]  since_ms: the highest score already seen (inclusive, so bans
--          added in the same millisecond are not missed)
-- ARGV[2]  max members to return
--
-- Returns {now_ms, member, score, member, score, ...}.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local found = redis.call(
    'ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2])
)
table.insert(found, 1, now)
return found
