-- A batch of source entries' effects. For each entry, all or nothing: compare-and-set of
-- the step's version, XACK of the source entry, derived XADDs, usage totals, stall index.
-- One call per batch: the batch arrives as one JSON argument, so the client encodes one
-- string instead of dozens of arguments per entry.
--
-- KEYS: 1 derived stream, 2 source stream, 3 stall zset,
--       then for entry i: step state (a string), run hash (2 keys each)
-- ARGV: 1 group, 2 derived maxlen, 3 JSON array of entries:
--       {id: source id, e: expected version ('' = step unknown), v: new version,
--        sid: step id, f: the step's new state string ('' = unchanged), version first,
--        rf: [field, value, ...] of the run hash (thread and assistant, first sighting),
--        ev: [derived event JSON, ...],
--        u: [prompt, completion, total] (optional), ru: run.usage event (optional),
--        st: '' | '+<deadline>' | '-', ttl: seconds (optional)}
-- Returns one code per entry: 0 conflict (version moved: decide again), 1 committed,
-- 2 acked already by another consumer (nothing written).
local group, maxlen = ARGV[1], ARGV[2]
local entries = cjson.decode(ARGV[3])
local results = {}
for i, c in ipairs(entries) do
  local step, run = KEYS[2 * i + 2], KEYS[2 * i + 3]
  local state = redis.call('GET', step)
  local current = state and string.match(state, '^[^|]*') or ''
  if current ~= c.e then
    results[i] = 0
  elseif redis.call('XACK', KEYS[2], group, c.id) == 0 then
    results[i] = 2
  else
    results[i] = 1
    if c.f ~= '' then
      if c.ttl then
        redis.call('SET', step, c.f, 'EX', c.ttl)
      else
        redis.call('SET', step, c.f)
      end
      for _, event in ipairs(c.ev) do
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', event)
      end
      -- The run hash lists its steps as '@<step id>' fields: a small listpack hash costs a
      -- few bytes per step where a set of strings is a hashtable (Redis 7.0).
      local run_fields = {run, '@' .. c.sid, ''}
      for _, x in ipairs(c.rf) do run_fields[#run_fields + 1] = x end
      redis.call('HSET', unpack(run_fields))
      if c.u then
        local event = c.ru
        event['prompt_tokens'] = redis.call('HINCRBY', run, 'prompt_tokens', c.u[1])
        event['completion_tokens'] = redis.call('HINCRBY', run, 'completion_tokens', c.u[2])
        event['total_tokens'] = redis.call('HINCRBY', run, 'total_tokens', c.u[3])
        event['steps_counted'] = redis.call('HINCRBY', run, 'steps_counted', 1)
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', cjson.encode(event))
      end
      if c.st == '-' then
        redis.call('ZREM', KEYS[3], c.sid)
      elseif c.st ~= '' then
        redis.call('ZADD', KEYS[3], string.sub(c.st, 2), c.sid)
      end
      if c.ttl then
        redis.call('EXPIRE', run, c.ttl)
      end
    end
  end
end
return results
