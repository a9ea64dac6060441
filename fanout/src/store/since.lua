-- Reads a room's stored events after a position, with what tells whether they are all of them.
-- KEYS[1]: the stream; KEYS[2]: the floor. ARGV[1]: the exclusive start ('(' and an id, or '-');
-- ARGV[2]: most entries returned; ARGV[3]: which are returned when more follow, 'newest' or
-- 'oldest'.
-- Returns {floor or '', the oldest entry's id or '', entries, 1 when more followed the position
-- than were returned}, read at one instant.
local floor = redis.call('GET', KEYS[2])
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local limit = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', limit + 1)
local truncated = 0
if #entries > limit and ARGV[3] == 'oldest' then
  truncated = 1
  entries[#entries] = nil
elseif #entries > limit then
  truncated = 1
  local newest = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', limit)
  entries = {}
  for i = #newest, 1, -1 do
    entries[#entries + 1] = newest[i]
  end
end
return {floor or '', oldest and oldest[1] or '', entries, truncated}
