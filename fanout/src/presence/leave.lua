
-- Removes connections, then the expired ones. ARGV: channel, now ms, sweep limit, connection ids.
local left = {}
for i = 4, #ARGV do leave(ARGV[i], left) end
local swept = sweep(ARGV[2], tonumber(ARGV[3]), left)
announce(ARGV[1], {}, left)
return {#left, swept}
