-- GCRA check of every rate-limit policy of one request, all or nothing.
--
-- Units: times, intervals and tolerances in microseconds; cost in tokens.
-- A bucket key holds its theoretical arrival time (TAT) as an integer; a
-- missing key is a full bucket, so each key expires when its TAT passes.
--
-- KEYS[i]   bucket of policy i; all keys share one hash tag (one slot).
-- ARGV[1]   current time in microseconds, or "0" to use the server's TIME
--           (app servers with skewed clocks then agree).
-- ARGV[2]   cost of the request in tokens.
-- ARGV[3i], ARGV[3i+1], ARGV[3i+2]   for policy i: interval, tolerance,
--           and "1" when the policy is in shadow mode (never denies).
--
-- Returns {admitted, then for each policy i: remaining_i, retry_after_i,
-- reset_after_i}, all integers. Policy i allowed the request exactly when
-- retry_after_i is 0, so no field says so apart. The request is admitted
-- when every policy not in shadow mode allows it; only then are the TATs of
-- the policies that allowed it stored. When the request is denied, the
-- figures of the policies that allowed it are from before the request.
--
-- Every number stays below 2^53, where Lua's doubles are exact integers.

local floor = math.floor

local function floor_div(a, b)
  local q = floor(a / b)
  -- a / b is rounded to the nearest double; correct the quotient exactly.
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Redis 3.2 to 4 replicate a script that read TIME only as its effects, and
-- only when asked; Redis 5 and later always do and keep this as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local now = tonumber(ARGV[1])
if now == 0 then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local cost = tonumber(ARGV[2])

-- The reply is built in place: reply[3i - 1 .. 3i + 1] are the figures of
-- policy i, and tats[i] the TAT to store, or false when it denied.
local admitted = 1
local reply = {1}
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i])
  local tolerance = tonumber(ARGV[3 * i + 1])

  local tat = tonumber(redis.call('GET', KEYS[i])) or 0
  local base = tat > now and tat or now
  local new_tat = base + cost * interval
  local allow_at = new_tat - tolerance

  if allow_at > now then
    reply[3 * i - 1] = floor_div(now + tolerance - base, interval)
    reply[3 * i] = allow_at - now
    reply[3 * i + 1] = base - now
    tats[i] = false
    if ARGV[3 * i + 2] ~= '1' then
      admitted = 0
    end
  else
    reply[3 * i - 1] = floor_div(now + tolerance - new_tat, interval)
    reply[3 * i] = 0
    reply[3 * i + 1] = new_tat - now
    tats[i] = new_tat
  end
end
reply[1] = admitted

for i = 1, #KEYS do
  local tat = tats[i]
  if tat and admitted == 1 then
    -- The key may vanish when the bucket is full again: round up to ms.
    local ttl = floor((reply[3 * i + 1] + 999) / 1000)
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', ttl)
  elseif tat then
    -- Denied by another policy: give the figures from before the request.
    reply[3 * i - 1] = reply[3 * i - 1] + cost
    reply[3 * i + 1] = reply[3 * i + 1] - cost * tonumber(ARGV[3 * i])
  end
end
return reply
