-- One source entry's effects, all or nothing: compare-and-set of the step's state,
-- XACK of the source entry, derived XADDs, usage totals, stall index.
--
-- KEYS: 1 step hash, 2 run hash, 3 run steps set, 4 derived stream, 5 source stream,
--       6 stall zset
-- ARGV: 1 expected version ('' = step unknown), 2 new version, 3 group, 4 source id,
--       5 derived maxlen, 6 ttl seconds ('' = none), 7 stall op ('' | '+<deadline>' | '-'),
--       8 step id, 9 usage prompt ('' = no usage), 10 usage completion, 11 usage total,
--       12 run.usage template json, 13 n field pairs, 14 n events,
--       then the field pairs, then the derived event JSONs.
-- Returns {0, current version} on conflict, {2} when the entry was acked already
-- (another consumer did it), {1} when committed.
local current = redis.call('HGET', KEYS[1], 'v') or ''
if current ~= ARGV[1] then
  return {0, current}
end
if redis.call('XACK', KEYS[5], ARGV[3], ARGV[4]) == 0 then
  return {2}
end
local nfields = tonumber(ARGV[13])
local nevents = tonumber(ARGV[14])
if nfields == 0 and nevents == 0 then
  return {1}  -- a checked no-op: only the ack was owed
end
local hset = {KEYS[1], 'v', ARGV[2]}
local at = 15
for _ = 1, nfields * 2 do
  hset[#hset + 1] = ARGV[at]
  at = at + 1
end
redis.call('HSET', unpack(hset))
for _ = 1, nevents do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'data', ARGV[at])
  at = at + 1
end
redis.call('SADD', KEYS[3], ARGV[8])
if ARGV[9] ~= '' then
  local event = cjson.decode(ARGV[12])
  event['prompt_tokens'] = redis.call('HINCRBY', KEYS[2], 'prompt_tokens', ARGV[9])
  event['completion_tokens'] = redis.call('HINCRBY', KEYS[2], 'completion_tokens', ARGV[10])
  event['total_tokens'] = redis.call('HINCRBY', KEYS[2], 'total_tokens', ARGV[11])
  event['steps_counted'] = redis.call('HINCRBY', KEYS[2], 'steps_counted', 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'data', cjson.encode(event))
end
local stall = ARGV[7]
if stall == '-' then
  redis.call('ZREM', KEYS[6], ARGV[8])
elseif stall ~= '' then
  redis.call('ZADD', KEYS[6], string.sub(stall, 2), ARGV[8])
end
if ARGV[6] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return {1}
