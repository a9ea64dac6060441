
-- Adds or refreshes connections. ARGV: channel, now ms, expiry ms, key ttl ms, then a triple per
-- connection: id, user, name ('' for none). A known connection only gets its new expiry.
local joined, left = {}, {}
sweep(ARGV[2], 1000, left)
for i = 5, #ARGV, 3 do
  local conn, user, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZADD', KEYS[1], ARGV[3], conn) == 1 then
    redis.call('HSET', KEYS[2], conn, user)
    if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then
      redis.call('ZADD', KEYS[4], 'NX', ARGV[2], user)
      redis.call('HSET', KEYS[5], user, name)
      joined[#joined + 1] = {user, name, tonumber(ARGV[2])}
    end
  end
end
-- The whole room goes once no pod refreshes it any more.
for k = 1, 5 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
announce(ARGV[1], joined, left)
return #joined
