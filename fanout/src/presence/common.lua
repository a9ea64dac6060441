-- Shared by the presence scripts. KEYS: 1 conns (zset conn -> expiry ms), 2 owner (hash conn ->
-- user), 3 refs (hash user -> live connections), 4 users (zset user -> first seen ms), 5 names
-- (hash user -> name). A user is present while one of their connections is.

local function leave(conn, left)
  if redis.call('ZREM', KEYS[1], conn) == 0 then return end
  local user = redis.call('HGET', KEYS[2], conn)
  redis.call('HDEL', KEYS[2], conn)
  if not user then return end
  if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
    redis.call('HDEL', KEYS[3], user)
    redis.call('ZREM', KEYS[4], user)
    redis.call('HDEL', KEYS[5], user)
    left[#left + 1] = user
  end
end

-- Connections whose pod stopped refreshing them (SIGKILL, node loss) leave here.
local function sweep(now, limit, left)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
  for _, conn in ipairs(expired) do leave(conn, left) end
  return #expired
end

-- One message per call, so a batch of a thousand joins is one event on every pod, not a thousand.
local function announce(channel, joined, left)
  if #joined > 0 or #left > 0 then
    redis.call('PUBLISH', channel, cjson.encode({j = joined, l = left}))
  end
end
