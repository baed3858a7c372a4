-- A batch of source entries' effects, in one atomic call: every entry is decided here, on
-- the state it finds, with the transition tables STEP and RUN that service/script.py
-- generates from the pure service/core/lifecycle.py and puts above this text. The worker never
-- reads state first, so replicas never conflict; two replicas running the same entry, or
-- one entry delivered twice, meet the state it left: a duplicate or a stale status, which
-- publish nothing. That is why the batch's entries are acked here, together, at the end.
-- An entry naming another thread or assistant than its run's ('t', 'a': set by the first
-- entry naming them) is neither applied nor acked, none of its ops: the worker
-- dead-letters it (identity_mismatch). Every unpack() of a list that grows with the batch
-- goes in chunks (Lua's stack holds ~8,000 values).
--
-- A run's hash holds each step's state as field '@<step id>', the run's own state as 'r'
-- (state strings start with the status code; the refused statuses follow: service/core/state.py),
-- 't' and 'a' (thread, assistant), 'n' (subjects in progress: steps, and the run itself),
-- the usage totals, 'k<code>' (steps ended, by terminal status) and 'ra' (requires_action
-- rounds already published). It expires TTL seconds after its last subject ended; while
-- any is in progress it does not expire.
--
-- KEYS: 1 derived stream, 2 source stream, 3 stall zset, then one run hash per run group
-- ARGV: 1 group, 2 derived maxlen, 3 state TTL, 4 number of ids to ack (entries with no
--       effects), then those ids, then per run group (a run's entries that agree on its
--       thread and assistant): its number of entries, run id, thread, assistant, and per
--       entry 8 arguments (service/core/ops.py Op): source entry id (acked here unless it
--       mismatched), head, field, state, start, end, key, extra
--       (key and extra: a step's usage and run.usage; a waiting run's round and
--       run.requires_action; an ending run's own totals and run.usage). An entry that ends
--       its subject carries its end only, and as `start` the start's last fields: the
--       start and the rejection it rarely needs are built here, from the end's ids.
-- Returns one action letter per entry, in order: what was done (lifecycle.Action).
local derived, source, stalls = KEYS[1], KEYS[2], KEYS[3]
local group, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local nacks = tonumber(ARGV[4])
local FIXED = {'n', 't', 'a', 'ra', 'prompt_tokens', 'completion_tokens', 'total_tokens',
               'steps_counted', 'kc', 'kf', 'kx', 'ke', 'kn'}
local NFIXED = #FIXED
local COUNTED = {'kc', 'kf', 'kx', 'ke', 'kn'}  -- steps ended, by terminal status code
local COUNT_AT = {c = 1, f = 2, x = 3, e = 4, n = 5}
-- Token totals are doubles, written with '%.0f' (never '%d', which wraps past 2^63): exact
-- up to 2^53-1, which counts bounded at decode (contracts/limits.py) keep for 2^20 steps.
local results = {}
local adds, rems = {}, {}  -- stall index changes: one ZADD and one ZREM for the batch
local acks, held = {}, {}  -- entries to ack; entries not to (their identity mismatched)
for i = 5, 4 + nacks do acks[#acks + 1] = ARGV[i] end

local function publish(data)
  redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', data)
end

-- run.usage: the template the entry carries, closed with these totals.
local function publish_usage(template, totals)
  publish(string.format(
    '%s,"prompt_tokens":%.0f,"completion_tokens":%.0f,"total_tokens":%.0f,"steps_counted":%d}',
    template, totals[1], totals[2], totals[3], totals[4]))
end

-- `command key f1 f2 ...` over `list`, in chunks of `n` (unpack's bound): HSET, ZADD, ...
local function chunked(command, key, list, n)
  if #list == 0 then
    return {}
  elseif #list <= n then
    return redis.call(command, key, unpack(list))  -- the common case: one call, as is
  end
  local replies = {}
  for i = 1, #list, n do
    local reply = redis.call(command, key, unpack(list, i, math.min(i + n - 1, #list)))
    if type(reply) == 'table' then
      for _, v in ipairs(reply) do replies[#replies + 1] = v end
    end
  end
  return replies
end

-- The tracked status as the template's from_status: quoted, or null. Only that field: a
-- quote inside any JSON string value is escaped, so the sequence cannot occur elsewhere.
local FROM_FIELD = '"from_status":"%FROM%"'
local function spliced(template, name)
  local at = string.find(template, FROM_FIELD, 1, true)
  local value = name and ('"' .. name .. '"') or 'null'
  return string.sub(template, 1, at + 13) .. value .. string.sub(template, at + #FROM_FIELD)
end

-- contracts.derived.event_id_for: the UUIDv5 of 'run|step|type|qualifier' in NAMESPACE.
local function event_id(run_id, subject, type_, qualifier)
  local h = redis.sha1hex(NAMESPACE .. run_id .. '|' .. subject .. '|' .. type_ .. '|' .. qualifier)
  local variant = tonumber(string.sub(h, 17, 17), 16) % 4 + 1
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14, 16)
    .. '-' .. string.sub('89ab', variant, variant) .. string.sub(h, 18, 20) .. '-'
    .. string.sub(h, 21, 32)
end

-- An event of an ending entry that the worker did not build: its type and id, the ids
-- its end carries (`"source":…,"assistant_id":…`: quotes inside values are escaped, so the
-- first ',"from_status":' ends them), then `rest`.
local function built(type_, run_id, subject, qualifier, finish, rest)
  return '{"type":"' .. type_ .. '","event_id":"' .. event_id(run_id, subject, type_, qualifier)
    .. '",' .. string.match(finish, '^{"type":"[^"]*","event_id":"[^"]*",(.-),"from_status":')
    .. ',' .. rest
end

-- The start of a subject first seen ended; `tail` ends it (occurred_at, step_type).
local function built_start(step, run_id, subject, finish, tail)
  return built(step and 'run_step.started' or 'run.started', run_id, subject, '', finish,
    '"from_status":null,"to_status":"in_progress",' .. tail)
end

-- The rejection of a second terminal status `to` for a subject already `from`.
local function built_rejection(step, run_id, subject, finish, from, to)
  local kind = step and 'step' or 'run'
  local occurred = string.match(finish, ',"occurred_at":([^,]*),')
  return built((step and 'run_step' or 'run') .. '.transition_rejected', run_id, subject, to,
    finish, '"from_status":"' .. from .. '","to_status":"' .. to .. '","occurred_at":'
    .. occurred .. ',"reason":"' .. kind .. ' is already ' .. from
    .. '; terminal statuses are final"}')
end

local a = 5 + nacks
local k = 3
local nargs = #ARGV
while a <= nargs do
  k = k + 1
  local run = KEYS[k]
  local nops, run_id, thread, assistant = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  -- One HMGET for the run: its fixed fields, then each subject the group names.
  local want, at = {unpack(FIXED)}, {}
  for j = a + 2, a + 8 * (nops - 1) + 2, 8 do
    local f = ARGV[j]
    if not at[f] then
      want[#want + 1] = f
      at[f] = #want
    end
  end
  local got = chunked('HMGET', run, want, 4000)
  local cur = {}
  for f, pos in pairs(at) do
    cur[f] = got[pos]
  end
  -- The group names another thread or assistant than the run's: its naming entries clash.
  local clash = (thread ~= '' and got[2] and got[2] ~= thread)
    or (assistant ~= '' and got[3] and got[3] ~= assistant)
  local live = tonumber(got[1]) or 0
  local live_before, ended = live, false
  local ra = got[4] or ''
  local out, touched = {}, {}  -- fields to write, in first-written order
  local function set(f, v)
    if not touched[f] then
      touched[f] = true
      out[#out + 1] = f
    end
    cur[f] = v
  end
  local totals, counts  -- read lazily from `got`, kept as numbers
  local function load_counts()
    local loaded = {}
    for c = 1, 5 do loaded[c] = tonumber(got[8 + c]) or 0 end
    return loaded
  end
  for _ = 1, nops do
    local sid, head, f, state, start, finish, key, extra = unpack(ARGV, a, a + 7)
    a = a + 8
    local step = string.byte(head, 1) == 115  -- 's'
    local subject = step and string.sub(f, 2) or ''  -- a step's id; a run's own state: ''
    local code = string.sub(head, 2, 2)
    local now = cur[f]
    local have = now and string.sub(now, 1, 1) or ''
    local act = (step and STEP or RUN)[have .. code]
    if clash and string.byte(head, 3) == 43 then  -- '+': this entry names them
      act = 'I'
      held[sid] = true
    else
      acks[#acks + 1] = sid
    end
    if act == 'R' then
      local refused = string.match(now, '^.|([^|]*)')
      if string.find(refused, code, 1, true) then
        act = 'D'
      else
        set(f, string.sub(now, 1, 2) .. refused .. code .. string.sub(now, 3 + #refused))
        local names = step and STEP_NAMES or RUN_NAMES
        publish(built_rejection(step, run_id, subject, finish, names[have], names[code]))
        ended = true
      end
    elseif act == 'S' or act == 'W' then
      set(f, state)
      publish(start)
      live = live + 1
      if step then
        local deadline, member = string.match(head, '^...|(%d+)|(.*)$')
        adds[#adds + 1] = deadline
        adds[#adds + 1] = member
      end
    elseif act == 'M' or act == 'A' then
      set(f, state)
    elseif act == 'E' or act == 'B' then
      set(f, state)
      ended = true
      local from = 'in_progress'
      if act == 'B' then
        publish(built_start(step, run_id, subject, finish, start))
      else
        live = live - 1
        if step then
          rems[#rems + 1] = string.match(head, '^...|%d*|(.*)$')
        else
          from = RUN_NAMES[have]
        end
      end
      if step then
        publish(finish)
        counts = counts or load_counts()
        counts[COUNT_AT[code]] = counts[COUNT_AT[code]] + 1
        if key ~= '' then
          if not totals then
            totals = {}
            for t = 1, 4 do totals[t] = tonumber(got[4 + t]) or 0 end
          end
          local p, c, t = string.match(key, '^(%d+),(%d+),(%d+)$')
          totals[1], totals[2] = totals[1] + tonumber(p), totals[2] + tonumber(c)
          totals[3], totals[4] = totals[3] + tonumber(t), totals[4] + 1
          publish_usage(extra, totals)
        end
      else
        counts = counts or load_counts()
        if key ~= '' then  -- a response's own totals (Responses): they replace the sums
          local p, c, t = string.match(key, '^(%d+),(%d+),(%d+)$')
          local ended_steps = counts[1] + counts[2] + counts[3] + counts[4] + counts[5]
          totals = {tonumber(p), tonumber(c), tonumber(t), ended_steps}
          publish_usage(extra, totals)
        end
        publish(string.format(
          '%s,"steps":{"completed":%d,"failed":%d,"cancelled":%d,"expired":%d,"incomplete":%d}}',
          spliced(finish, from), counts[1], counts[2], counts[3], counts[4], counts[5]))
      end
    end
    if act == 'W' or act == 'A' then
      -- A round of tool calls is published once, whatever order its events come in (a
      -- round naming no call has no key: the move into requires_action publishes it).
      if key ~= '' and string.find(',' .. ra .. ',', ',' .. key .. ',', 1, true) then
        if act == 'A' then act = 'M' end
      else
        if key ~= '' then
          ra = ra == '' and key or (ra .. ',' .. key)
          set('ra', ra)
        end
        publish(spliced(extra, act == 'A' and RUN_NAMES[have] or nil))
      end
    end
    results[#results + 1] = act
  end
  if #out > 0 then
    local fields = {}
    for _, f in ipairs(out) do
      fields[#fields + 1] = f
      fields[#fields + 1] = cur[f]
    end
    if not clash and not got[2] and thread ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 't', thread
    end
    if not clash and not got[3] and assistant ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 'a', assistant
    end
    if live ~= live_before then
      live = math.max(0, live)
      fields[#fields + 1], fields[#fields + 2] = 'n', tostring(live)
    end
    if totals then
      for t = 1, 4 do
        fields[#fields + 1] = FIXED[4 + t]
        fields[#fields + 1] = string.format('%.0f', totals[t])
      end
    end
    if counts then
      for c = 1, 5 do
        fields[#fields + 1] = COUNTED[c]
        fields[#fields + 1] = tostring(counts[c])
      end
    end
    chunked('HSET', run, fields, 4000)  -- field-value pairs: n is even
    if live > 0 then
      if live_before == 0 then
        redis.call('PERSIST', run)  -- its first live subject: it expires no more
      end
    elseif ended or live_before > 0 then
      redis.call('EXPIRE', run, ttl)
    elseif redis.call('TTL', run) == -1 then
      redis.call('EXPIRE', run, ttl)  -- nothing live and nothing ended: keep it bounded
    end
  end
end
-- Adds before removals: a step that starts and ends in one batch leaves no member. (A
-- step is never removed and then added: it ends only once.)
chunked('ZADD', stalls, adds, 1000)  -- score-member pairs: n is even
chunked('ZREM', stalls, rems, 1000)
-- An entry's ops are all held or none (they share its identity); held wins over acked.
local acked = {}
for _, sid in ipairs(acks) do
  if not held[sid] then acked[#acked + 1] = sid end
end
for i = 1, #acked, 1000 do
  redis.call('XACK', source, group, unpack(acked, i, math.min(i + 999, #acked)))
end
return table.concat(results)
