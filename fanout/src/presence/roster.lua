
-- A page of the roster, oldest arrival first, after the expired connections left. ARGV: channel,
-- now ms, offset, limit. Answers the count, users with their first-seen times, and their names.
local left = {}
sweep(ARGV[2], 1000, left)
announce(ARGV[1], {}, left)
local count = redis.call('ZCARD', KEYS[4])
local first = tonumber(ARGV[3])
local page = redis.call('ZRANGE', KEYS[4], first, first + tonumber(ARGV[4]) - 1, 'WITHSCORES')
local users = {}
for i = 1, #page, 2 do users[#users + 1] = page[i] end
local names = {}
if #users > 0 then names = redis.call('HMGET', KEYS[5], unpack(users)) end
return {count, page, names}
