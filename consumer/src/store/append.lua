-- Appends a batch of a room's events to its stream, then trims it by length and age.
-- KEYS[1]: the stream; KEYS[2]: the floor (the id of the newest entry let go).
-- ARGV[1]: most entries kept; ARGV[2]: longest age kept, in ms; ARGV[3]: now, in ms since the
-- epoch; then id and event pairs, in the room's order.
-- Returns {entries added, stream length}. An id at or below the stream's last one is a
-- redelivery already stored, and is skipped: an append can be repeated safely.
local max_len = tonumber(ARGV[1])
local max_age = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV, 2 do
  local r = redis.pcall('XADD', KEYS[1], ARGV[i], 't', ARGV[3], 'e', ARGV[i + 1])
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then
      return redis.error_reply(r.err)
    end
  else
    added = added + 1
  end
end
local len = redis.call('XLEN', KEYS[1])
-- Entries past the length cap go first, then those older than the age cap, oldest first; at
-- most 10,000 per call so one call stays short (the next append goes on).
local excess = math.max(len - max_len, 0)
local window = math.min(excess + 64, 10000)
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', window + 1)
local drop = 0
for k = 1, math.min(window, #oldest) do
  if k <= excess or tonumber(oldest[k][2][2]) < now - max_age then
    drop = k
  else
    break
  end
end
if drop > 0 then
  redis.call('SET', KEYS[2], oldest[drop][1])
  if drop < #oldest then
    redis.call('XTRIM', KEYS[1], 'MINID', oldest[drop + 1][1])
  else
    redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  end
  len = len - drop
end
-- A room quiet for longer than the age cap has nothing left worth keeping.
redis.call('PEXPIRE', KEYS[1], max_age)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], max_age)
end
return {added, len}
