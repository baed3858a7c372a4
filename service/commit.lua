-- A batch of source entries' effects. For each entry, all or nothing: compare-and-set of
-- the step's version, XACK of the source entry, derived XADDs, usage totals, stall index.
-- One call per batch. Arguments are flat strings, read with a cursor: no cjson on either
-- side (decoding one JSON batch cost more Redis time than all the writes it described).
--
-- A step's state lives in its run's hash, as field '@<step id>': a small hash is one
-- compact listpack, where a key per step would cost a key, a value object and a TTL entry.
-- The run hash also holds 't' and 'a' (thread, assistant), 'n' (steps in progress) and the
-- usage totals. It expires state TTL seconds after its last step ended; while any step is
-- in progress it does not expire.
--
-- KEYS: 1 derived stream, 2 source stream, 3 stall zset, then the run hash of each entry
-- ARGV: 1 group, 2 derived maxlen, then per entry 7 arguments and its events:
--       a header of fields that never hold '|', joined by '|' (one argument instead of
--       seven: the client packs every argument separately, and this is its hot path):
--         id (source entry), e (expected version, '' = step unknown),
--         st ('' | '+<deadline>' | '-'), ttl ('' = none), dn (steps in progress: -1, 0, 1),
--         u (usage 'p,c,t', '' = none), n (number of derived events);
--       sid (step id), f (new state string, '' = unchanged: a checked no-op),
--       m (the step's stall index member), t and a (thread and assistant for the run hash,
--       '' = known already), ru (the run.usage event JSON, its totals cut off: they are
--       appended here), then n derived event JSON strings.
-- Returns one code per entry: 0 conflict (version moved: decide again), 1 committed,
-- 2 acked already by another consumer (nothing written).
local group, maxlen = ARGV[1], ARGV[2]
local derived, source, stalls = KEYS[1], KEYS[2], KEYS[3]
local TOTALS = {'prompt_tokens', 'completion_tokens', 'total_tokens', 'steps_counted'}
local results = {}
local adds, rems = {}, {}  -- stall index changes: one ZADD and one ZREM for the batch
local a = 3
local i = 0
local nargs = #ARGV
while a <= nargs do
  i = i + 1
  local id, expected, stall, ttl, dn, usage, n =
    string.match(ARGV[a], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  local sid, state, member, thread, assistant, run_usage = unpack(ARGV, a + 1, a + 6)
  local first = a + 7
  a = first + tonumber(n)
  local run, field = KEYS[3 + i], '@' .. sid
  local got
  if usage ~= '' then
    got = redis.call('HMGET', run, field, 'n', unpack(TOTALS))
  else
    got = redis.call('HMGET', run, field, 'n')
  end
  local current = got[1] and string.match(got[1], '^[^|]*') or ''
  if current ~= expected then
    results[i] = 0
  elseif redis.call('XACK', source, group, id) == 0 then
    results[i] = 2
  else
    results[i] = 1
    if state ~= '' then
      local fields = {run, field, state}
      if thread ~= '' or assistant ~= '' then
        fields[4], fields[5], fields[6], fields[7] = 't', thread, 'a', assistant
      end
      local live = tonumber(got[2]) or 0
      if dn ~= '0' then
        live = math.max(0, live + tonumber(dn))
        fields[#fields + 1] = 'n'
        fields[#fields + 1] = tostring(live)
      end
      local usage_event
      if usage ~= '' then
        local add = {string.match(usage, '^(%d+),(%d+),(%d+)$')}
        add[4] = 1
        local event = {run_usage}
        for k = 1, 4 do
          local total = string.format('%d', (tonumber(got[k + 2]) or 0) + add[k])
          fields[#fields + 1] = TOTALS[k]
          fields[#fields + 1] = total
          event[k + 1] = ',"' .. TOTALS[k] .. '":' .. total
        end
        event[6] = '}'
        usage_event = table.concat(event)
      end
      redis.call('HSET', unpack(fields))
      for k = first, a - 1 do
        redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[k])
      end
      if usage_event then
        redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', usage_event)
      end
      if stall == '-' then
        rems[#rems + 1] = member
      elseif stall ~= '' then
        adds[#adds + 1] = string.sub(stall, 2)
        adds[#adds + 1] = member
      end
      if live > 0 then
        if dn == '1' and live == 1 then
          redis.call('PERSIST', run)  -- the run's first live step: it expired no more
        end
      elseif ttl ~= '' then
        redis.call('EXPIRE', run, ttl)
      end
    end
  end
end
-- Adds before removals: a step that starts and ends in one batch leaves no member. (A
-- step is never removed and then added: it ends only once.) In chunks: unpack() is bounded.
for k = 1, #adds, 1000 do
  redis.call('ZADD', stalls, unpack(adds, k, math.min(k + 999, #adds)))
end
for k = 1, #rems, 500 do
  redis.call('ZREM', stalls, unpack(rems, k, math.min(k + 499, #rems)))
end
return results
