-- Remove the group's dead consumers: idle longer than ARGV[3] ms with nothing pending, never
-- the caller ARGV[2]. A script, so no consumer can fetch entries between the check and the
-- XGROUP DELCONSUMER, which would drop its pending entries from the group for good.
-- KEYS: 1 source stream
-- ARGV: 1 group, 2 the caller's consumer name, 3 idle time in ms
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
