-- Count strikes against one client and ban it past the threshold.
--
-- Strikes drain like a leaky bucket, one every window_ms / threshold
-- milliseconds, so a client is banned once it collects `threshold` strikes
-- faster than they drain. A ban lasts ban_ms * multiplier ^ (earlier offences), at most
-- max_ban_ms; offences are remembered for repeat_ms after the last ban.
-- Time comes from the Redis server, so app servers with skewed clocks agree.
--
-- KEYS[1]  strike bucket (hash: level, updated)   TTL: window_ms
-- KEYS[2]  offence count (integer)                 TTL: repeat_ms
-- KEYS[3]  ban marker                              TTL: the ban's length
-- ARGV[1]  strikes to add (integer >= 1)
-- ARGV[2]  threshold (strikes)
-- ARGV[3]  window_ms
-- ARGV[4]  ban_ms (first ban)
-- ARGV[5]  multiplier (float >= 1)
-- ARGV[6]  max_ban_ms
-- ARGV[7]  repeat_ms
--
-- Returns {ban_ms, offence, now_ms}: ban_ms is 0 when no new ban started,
-- and minus the milliseconds left when the client was already banned (no
-- strike counted).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local weight = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])

local left = redis.call('PTTL', KEYS[3])
if left > 0 then
    return {-left, 0, now}
end

-- Only whole strikes drain, and `updated` moves by whole drain steps, so a
-- part-drained strike still counts.
local level = 0
local updated = now
local stored = redis.call('HMGET', KEYS[1], 'level', 'updated')
if stored[1] then
    local step = window_ms / threshold
    level = tonumber(stored[1])
    updated = tonumber(stored[2])
    local drained = math.floor(math.max(0, now - updated) / step)
    if drained >= level then
        level = 0
        updated = now
    elseif drained > 0 then
        level = level - drained
        updated = updated + drained * step
    end
end
level = level + weight

if level < threshold then
    redis.call('HSET', KEYS[1], 'level', level, 'updated', tostring(updated))
    redis.call('PEXPIRE', KEYS[1], window_ms)
    return {0, 0, now}
end

local offence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]))
local ban_ms = tonumber(ARGV[4]) * tonumber(ARGV[5]) ^ (offence - 1)
ban_ms = math.floor(math.min(ban_ms, tonumber(ARGV[6])))
redis.call('SET', KEYS[3], offence, 'PX', ban_ms)
redis.call('DEL', KEYS[1])
return {ban_ms, offence, now}
