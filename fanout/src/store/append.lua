-- Appends a batch of a room's events to its stream, then trims it by length and age.
-- KEYS[1]: the stream; KEYS[2]: the floor (the id of the newest entry let go).
-- ARGV[1]: most entries kept; ARGV[2]: longest age kept, in ms; ARGV[3]: now, in ms since the
-- epoch; then id and event pairs, in the room's order.
-- Returns {entries added, stream length}. An id at or below the stream's last one is a
-- redelivery already stored, and is skipped: an append can be repeated safely.
local max_len = tonumber(ARGV[1])
local max_age = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
-- A stream gone (evicted, or expired apart from its floor) takes its floor with it: what
-- follows starts a history of its own.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
end
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
-- Entries past the length cap go first, then those older than the age cap, oldest first. Pages
-- read only what may go and one entry more, so a stream under its caps costs one entry's read;
-- at most 10,000 go per call, so a call stays short (the next append goes on).
local excess = math.max(len - max_len, 0)
local cutoff = now - max_age
local floor, keep_from = nil, nil
local start, dropped = '-', 0
while true do
  local want = math.min(math.max(excess - dropped, 0), 1000)
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', want + 1)
  if #page == 0 then
    break
  end
  local k = 0
  for i = 1, #page do
    -- Fields are written 't' first: page[i][2][2] is the append time.
    if dropped + i <= excess or tonumber(page[i][2][2]) < cutoff then
      k = i
    else
      break
    end
  end
  if k > 0 then
    floor = page[k][1]
    dropped = dropped + k
  end
  if k < #page then
    keep_from = page[k + 1][1]
    break
  end
  if dropped >= 10000 then
    local next_entry = redis.call('XRANGE', KEYS[1], '(' .. floor, '+', 'COUNT', 1)[1]
    keep_from = next_entry and next_entry[1]
    break
  end
  start = '(' .. page[#page][1]
end
if floor then
  redis.call('SET', KEYS[2], floor)
  if keep_from then
    redis.call('XTRIM', KEYS[1], 'MINID', keep_from)
  else
    redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  end
  len = redis.call('XLEN', KEYS[1])
end
-- A room quiet for longer than the age cap has nothing left worth keeping.
redis.call('PEXPIRE', KEYS[1], max_age)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], max_age)
end
return {added, len}
