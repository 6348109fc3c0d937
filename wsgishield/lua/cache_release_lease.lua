-- Release a response-cache fill lease only if this process still holds it.
--
-- A lease may expire while its holder is slow and another process may take
-- it; deleting by key alone would then free that process's lease.
--
-- KEYS[1]  the lease key
-- ARGV[1]  the token the holder stored with SET NX PX
-- Returns  1 when the lease was released, 0 when it was not held.
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
