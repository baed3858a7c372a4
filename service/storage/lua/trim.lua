-- Trim the source stream of the entries no consumer group still needs and the retention
-- lets go: every entry older than the retention AND before every group's oldest pending
-- entry AND before every group's last-delivered-id (entries after it were never delivered
-- to that group). Read and trimmed in one step, on Redis's own clock (the one '*' ids use),
-- so no group's delivery or creation can slip in between.
-- KEYS: 1 source stream
-- ARGV: 1 retention in milliseconds, 2 the service's own consumer group
-- Returns the number of entries removed.
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err then  -- no stream (yet): nothing to trim
  return 0
end

-- Stream ids compared exactly, as decimal strings (a sequence number may pass 2^53).
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {ms, seq}
end
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function before(x, y)
  if x[1] ~= y[1] then return less(x[1], y[1]) end
  return less(x[2], y[2])
end

local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
if cutoff <= 0 then
  return 0
end
local bound = {string.format('%.0f', cutoff), '0'}
local ours = false
for _, fields in ipairs(groups) do
  local group = {}
  for i = 1, #fields, 2 do group[fields[i]] = fields[i + 1] end
  if group['name'] == ARGV[2] then ours = true end
  -- Its last-delivered-id itself is kept: one acked entry, no id arithmetic.
  local last = parse(group['last-delivered-id'])
  if before(last, bound) then bound = last end
  if group['pending'] > 0 then
    local oldest = parse(redis.call('XPENDING', KEYS[1], group['name'])[2])
    if before(oldest, bound) then bound = oldest end
  end
end
-- Without its own group the service cannot know what it still has to read (the group is
-- being recreated): keep everything.
if not ours or bound[1] == '0' and bound[2] == '0' then
  return 0
end
-- '~': only whole stream nodes go, and at most 100 nodes' worth per call (XTRIM's default
-- LIMIT), so one call never blocks Redis for long; it only ever trims less than exact.
return redis.call('XTRIM', KEYS[1], 'MINID', '~', bound[1] .. '-' .. bound[2])
