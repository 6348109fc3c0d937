-- Add one ban to the index that every process polls, and drop bans that
-- can no longer be active.
--
-- KEYS[1]  ban index (sorted set: member "subject|until_ms", score start_ms)
--          TTL: max_ban_ms + 60 s, renewed by every ban
-- ARGV[1]  member
-- ARGV[2]  max_ban_ms
--
-- Returns the score given to the member (server time in milliseconds).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local max_ban_ms = tonumber(ARGV[2])

redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - max_ban_ms))
redis.call('PEXPIRE', KEYS[1], max_ban_ms + 60000)
return now
