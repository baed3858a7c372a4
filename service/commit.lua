-- A batch of source entries' effects. For each entry, all or nothing: compare-and-set of
-- the step's version, XACK of the source entry, derived XADDs, usage totals, stall index.
-- One call per batch. Arguments are flat strings, read with a cursor: no cjson on either
-- side (decoding one JSON batch cost more Redis time than all the writes it described).
--
-- KEYS: 1 derived stream, 2 source stream, 3 stall zset,
--       then for entry i: step state (a string), run hash (2 keys each)
-- ARGV: 1 group, 2 derived maxlen, then per entry 13 fields and its events:
--       id (source entry), e (expected version, '' = step unknown), v (new version),
--       sid (step id), f (new state string, '' = unchanged: a checked no-op),
--       st ('' | '+<deadline>' | '-'), ttl ('' = none), t and a (thread and assistant for
--       the run hash, '' = known already), u (usage 'p,c,t', '' = none), ru (the run.usage
--       event JSON, its totals cut off: they are appended here), n (number of events),
--       then n derived event JSON strings.
-- Returns one code per entry: 0 conflict (version moved: decide again), 1 committed,
-- 2 acked already by another consumer (nothing written).
local group, maxlen = ARGV[1], ARGV[2]
local derived, source, stalls = KEYS[1], KEYS[2], KEYS[3]
local results = {}
local TOTALS = {'prompt_tokens', 'completion_tokens', 'total_tokens', 'steps_counted'}
local a = 3
local i = 0
local nargs = #ARGV
while a <= nargs do
  i = i + 1
  local id, expected, _, sid, state, stall, ttl, thread, assistant, usage, run_usage, n =
    unpack(ARGV, a, a + 11)
  local first = a + 12
  a = first + tonumber(n)
  local step, run = KEYS[2 * i + 2], KEYS[2 * i + 3]
  local current = redis.call('GET', step)
  current = current and string.match(current, '^[^|]*') or ''
  if current ~= expected then
    results[i] = 0
  elseif redis.call('XACK', source, group, id) == 0 then
    results[i] = 2
  else
    results[i] = 1
    if state ~= '' then
      if ttl ~= '' then
        redis.call('SET', step, state, 'EX', ttl)
      else
        redis.call('SET', step, state)
      end
      for k = first, a - 1 do
        redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[k])
      end
      -- The run hash lists its steps as '@<step id>' fields: a small listpack hash costs a
      -- few bytes per step where a set of strings is a hashtable (Redis 7.0). Usage totals
      -- are read and written back in the same HSET: fewer calls than one HINCRBY each.
      local fields = {run, '@' .. sid, ''}
      if thread ~= '' or assistant ~= '' then
        fields[4], fields[5], fields[6], fields[7] = 't', thread, 'a', assistant
      end
      if usage ~= '' then
        local p, c, t = string.match(usage, '^(%d+),(%d+),(%d+)$')
        local old = redis.call('HMGET', run, unpack(TOTALS))
        local totals = {
          string.format('%d', (tonumber(old[1]) or 0) + p),
          string.format('%d', (tonumber(old[2]) or 0) + c),
          string.format('%d', (tonumber(old[3]) or 0) + t),
          string.format('%d', (tonumber(old[4]) or 0) + 1),
        }
        local event = {run_usage}
        for k = 1, 4 do
          fields[#fields + 1] = TOTALS[k]
          fields[#fields + 1] = totals[k]
          event[k + 1] = ',"' .. TOTALS[k] .. '":' .. totals[k]
        end
        event[6] = '}'
        redis.call('HSET', unpack(fields))
        redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', table.concat(event))
      else
        redis.call('HSET', unpack(fields))
      end
      if stall == '-' then
        redis.call('ZREM', stalls, sid)
      elseif stall ~= '' then
        redis.call('ZADD', stalls, string.sub(stall, 2), sid)
      end
      if ttl ~= '' then
        redis.call('EXPIRE', run, ttl)
      end
    end
  end
end
return results
