-- A batch of source entries' effects, in one atomic call: every entry is decided here, on
-- the state it finds, with the transition tables STEP and RUN of the generated header
-- (from the pure service/core/lifecycle.py). The worker never reads state first, so
-- replicas never conflict; two replicas running the same entry, or one entry delivered
-- twice, meet the state it left: a duplicate or a stale status, which publish nothing.
-- That is why the batch's entries are acked here, together, at the end.
-- What each action publishes, and in which order, is PUBLISHES (service/core/published.py).
-- An entry naming another thread or assistant than its run's (F.thread, F.assistant: set by
-- the first entry naming them) is neither applied nor acked, none of its ops: the worker
-- dead-letters it (identity_mismatch). Every unpack() of a list that grows with the batch
-- goes in chunks (Lua's stack holds ~8,000 values).
--
-- The run hash's fields are the header's F, STEP_PREFIX and ENDED (service/core/layout.py).
-- It expires TTL seconds after its last subject ended; while any is in progress it does not.
-- KEYS and ARGV: service/storage/protocol.py, which builds them (STEP_ARGS and RUN_ARGS are
-- how many arguments one op takes; the two unpack() lines below name them in its order).
-- Returns one action letter per op, in order: what was done (lifecycle.Action).
-- Locals for the functions called per op: a global's lookup costs two table reads.
local byte, sub, find, match, format = string.byte, string.sub, string.find, string.match,
  string.format
local call, encode, floor, tonumber, unpack = redis.call, cjson.encode, math.floor, tonumber,
  unpack
-- The actions tested per op, as locals too.
local START, END, BEGIN_END, AWAIT, WAIT_START, MOVE, REJECT = ACT.START, ACT.END,
  ACT.BEGIN_END, ACT.AWAIT, ACT.WAIT_START, ACT.MOVE, ACT.REJECT
local derived, source, stalls, budget_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, maxlen, ttl = ARGV[BATCH.group], ARGV[BATCH.maxlen], ARGV[BATCH.ttl]
local nacks = tonumber(ARGV[BATCH.acks])
-- The run budgets (nil: off), and as given, for the events' JSON.
local BUDGET = {}
for _, limit in ipairs({'tokens', 'usd', 'steps', 'seconds'}) do
  local given = ARGV[BATCH['budget_' .. limit]]
  if given ~= '' then BUDGET[limit] = {tonumber(given), given} end
end
local BUDGETED = next(BUDGET) ~= nil
local NO_EVENTS = {}  -- shared, never added to
-- The run-wide fields read once per group, in this order (positions below).
-- (Each field read scans a compact hash: the budgets' two only while a budget is set.)
local FIXED = {F.live, F.thread, F.assistant, F.rounds, TOTALS[1], TOTALS[2], TOTALS[3],
               TOTALS[4], ENDED[1], ENDED[2], ENDED[3], ENDED[4], ENDED[5], F.model, F.prices,
               F.state, F.cost}
local AT_LIVE, AT_THREAD, AT_ASSISTANT, AT_ROUNDS, AT_TOTALS, AT_ENDED = 1, 2, 3, 4, 4, 8
local AT_MODEL, AT_PRICES, AT_RUN, AT_COST, AT_STARTED, AT_EXCEEDED = 14, 15, 16, 17, 18, 19
if BUDGETED then
  FIXED[AT_STARTED], FIXED[AT_EXCEEDED] = F.started, F.exceeded
end
local STEP_BYTE, TOOLS_BYTE = byte(STEP_PREFIX), byte(TOOLS_PREFIX)
local BY_RUN_BYTE = byte(BY_RUN_MARK)
-- A step's state string: status, refused, created_at, type, ended, then the rest.
local STATE_PARTS = '^(.)' .. SEP .. '([^' .. SEP .. ']*)' .. SEP .. '([^' .. SEP .. ']*)'
  .. SEP .. '([^' .. SEP .. ']*)' .. SEP .. '[^' .. SEP .. ']*' .. SEP .. '(.*)$'
-- A run's state string: status, refused, created_at, ended (seconds after created_at).
local RUN_STATE_PARTS = '^.' .. SEP .. '[^' .. SEP .. ']*' .. SEP .. '([^' .. SEP .. ']*)' .. SEP
  .. '([^' .. SEP .. ']*)$'
local REFUSED = '^.' .. SEP .. '([^' .. SEP .. ']*)'  -- a state's refused statuses' codes
-- Token totals are doubles, exact up to 2^53-1, which counts bounded at decode
-- (contracts/limits.py) keep for 2^20 steps. Below 2^53 they are written with '%d', past it
-- with '%.0f' (whose float formatting costs several times as much), never with '%d' there:
-- its C cast wraps past 2^63.
local EXACT = 2^53
local function count(n)
  return format(n < EXACT and '%d' or '%.0f', n)
end
local results = {}
-- What was published beyond PUBLISHES (the protocol's Committed.also): the end events of
-- the steps runs' ends closed, and 'run.budget_exceeded|<limit>'.
local also = {}
local badds, brems = {}, {}  -- seconds-budget index changes
local adds, rems = {}, {}  -- stall index changes: one ZADD and one ZREM for the batch
local acks, held = {}, {}  -- entries to ack; entries not to (their identity mismatched)
for i = BATCH.acks + 1, BATCH.acks + nacks do acks[#acks + 1] = ARGV[i] end

local function publish(data)
  call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', data)
end

-- run.usage's formats after its template: totals written as `totals` (see count), steps
-- counted, model, then its cost fields: priced here (US dollars exact to the nano-dollar,
-- then the price table's model), or given (as the entry gives them).
local function usage_formats(totals)
  local fields = '%s,"prompt_tokens":' .. totals .. ',"completion_tokens":' .. totals
    .. ',"total_tokens":' .. totals .. ',"steps_counted":%d,"model":%s,'
  return {priced = fields .. '"cost_usd":%d.%09d,"priced_model":%s}', given = fields .. '%s}'}
end
local USAGE, USAGE_WIDE = usage_formats('%d'), usage_formats('%.0f')

-- A run's prices (F.prices: 'in,cached,out' nano-dollars per token, then the price table's
-- model as JSON): input and output as numbers, and that model.
local function parse_prices(prices)
  local input, _, output, priced = match(prices or '', '^([^,]+),([^,]+),([^,]+),(.*)$')
  if input then return {tonumber(input), tonumber(output), priced} end
  return nil
end

-- run.usage: the template the entry carries, closed with these totals, the run's model and
-- `cost` (its cost fields), or else the totals priced at the run's `prices` (parsed; totals
-- do not say which input was cached, so all is input). Built in one string.format (each
-- string Lua makes costs); returns the event, whose cost the caller reads back (`reported`)
-- only while a usd budget is set.
local function publish_usage(template, totals, model, prices, cost)
  local event
  local forms = (totals[1] < EXACT and totals[2] < EXACT and totals[3] < EXACT) and USAGE
    or USAGE_WIDE
  if cost == '' and prices then
    local nano = floor(totals[1] * prices[1] + totals[2] * prices[2] + 0.5)
    event = format(forms.priced, template, totals[1], totals[2], totals[3], totals[4],
      model or 'null', floor(nano / 1e9), nano % 1e9, prices[3])
  else
    event = format(forms.given, template, totals[1], totals[2], totals[3], totals[4],
      model or 'null', cost ~= '' and cost or '"cost_usd":null,"priced_model":null')
  end
  publish(event)
  return event
end

-- The cost or duration a run's end reports, as written, or nil.
local function reported(end_event, name)
  local value = match(end_event, ',"' .. name .. '":([%d%.eE+-]+)')
  return value
end

-- `command key f1 f2 ...` over `list`, in chunks of `n` (unpack's bound): HSET, ZADD, ...
local function chunked(command, key, list, n)
  if #list == 0 then
    return {}
  elseif #list <= n then
    return call(command, key, unpack(list))  -- the common case: one call, as is
  end
  local replies = {}
  for i = 1, #list, n do
    local reply = call(command, key, unpack(list, i, math.min(i + n - 1, #list)))
    if type(reply) == 'table' then
      for _, v in ipairs(reply) do replies[#replies + 1] = v end
    end
  end
  return replies
end

-- The tracked status as the template's from_status: quoted, or null. Only that field: a
-- quote inside any JSON string value is escaped, so the sequence cannot occur elsewhere.
local FROM_FIELD = '"from_status":"%FROM%"'
local FROM_VALUE_AT = #'"from_status":'  -- where the value starts, less one
local function spliced(template, name)
  local at = find(template, FROM_FIELD, 1, true)
  local value = name and ('"' .. name .. '"') or 'null'
  return sub(template, 1, at + FROM_VALUE_AT - 1) .. value
    .. sub(template, at + #FROM_FIELD)
end

-- An event of an ending entry that the worker did not build: its type and id, the ids
-- its end carries (`"source":…,"assistant_id":…`: quotes inside values are escaped, so the
-- first ',"from_status":' ends them), then `rest`.
local function built(type_, run_id, subject, qualifier, finish, rest)
  return '{"type":"' .. type_ .. '","event_id":"' .. event_id(run_id, subject, type_, qualifier)
    .. '",' .. match(finish, '^{"type":"[^"]*","event_id":"[^"]*",(.-),"from_status":')
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
  local occurred = match(finish, ',"occurred_at":([^,]*),')
  return built((step and 'run_step' or 'run') .. '.transition_rejected', run_id, subject, to,
    finish, '"from_status":"' .. from .. '","to_status":"' .. to .. '","occurred_at":'
    .. occurred .. ',"reason":"' .. kind .. ' is already ' .. from
    .. '; terminal statuses are final"}')
end

-- A step's tool calls as its run's hash keeps them (core/layout.py encode_tools), as its
-- events list them: JSON kept as is, else one object per call, its id the step's own when
-- the kept one is empty, its name null when empty.
local CALL = '[^' .. TOOL_SEP .. ']+'
local CALL_FIELDS = '^([^' .. TOOL_FIELD_SEP .. ']*)' .. TOOL_FIELD_SEP .. '([^'
  .. TOOL_FIELD_SEP .. ']*)' .. TOOL_FIELD_SEP .. '(.*)$'
local function tools_json(kept, step_id)
  if not kept or kept == '' then return '[]' end
  if byte(kept, 1) == 91 then return kept end  -- '[': the events' JSON
  local calls = {}
  for one in string.gmatch(kept, CALL) do
    local type_, name, id = match(one, CALL_FIELDS)
    calls[#calls + 1] = '{"id":' .. encode(id == '' and step_id or id) .. ',"type":'
      .. encode(type_) .. ',"name":' .. (name == '' and 'null' or encode(name)) .. '}'
  end
  return '[' .. table.concat(calls, ',') .. ']'
end

-- A number as core/state.py writes it: an integer without a point, else its shortest form.
local function number(n)
  if n == floor(n) then return format('%d', n) end
  return format('%.17g', n)
end

-- When an ended run ended, as a JSON number, from its state string (nil if not kept).
local function run_ended_at(run_state)
  local created, ended = match(run_state, RUN_STATE_PARTS)
  if created and created ~= '' and ended and ended ~= '' then
    return number(tonumber(created) + tonumber(ended))
  end
  return nil
end

-- The end a step still in progress takes from its run's end (`run_code`, `occurred` the run
-- end's occurred_at as written): its new state string and its end event, ended_by_run.
-- Its thread and assistant are the run's (`thread`, `assistant`: JSON) for an Assistants
-- step; a Responses item's events name none. `tools`: its calls as kept (or nil).
local function ended_by_run(run_id, step_id, now, run_code, occurred, thread, assistant,
                            tools)
  local _, refused, created, type_, rest = match(now, STATE_PARTS)
  local assistants = STEP_TYPE_NAMES[type_] ~= nil  -- Assistants types are one-letter codes
  local to = BY_RUN[assistants and 'assistants' or 'responses'][run_code]
  local at, since = tonumber(occurred), tonumber(created)
  local duration = (at and since) and math.max(0, at - since) or nil
  local state = to .. SEP .. BY_RUN_MARK .. refused .. SEP .. created .. SEP .. type_ .. SEP
    .. (duration and number(duration) or '') .. SEP .. rest
  local type_name = STEP_END_TYPES[to]
  local step_type = assistants and STEP_TYPE_NAMES[type_]
    or (byte(type_, 1) == 61 and sub(type_, 2) or type_)  -- '=': core/state.py
  local event = '{"type":"' .. type_name .. '","event_id":"'
    .. event_id(run_id, step_id, type_name, '') .. '","source":"'
    .. (assistants and 'assistants' or 'responses') .. '","step_id":' .. encode(step_id)
    .. ',"run_id":' .. encode(run_id) .. ',"thread_id":'
    .. (assistants and thread or 'null') .. ',"assistant_id":'
    .. (assistants and assistant or 'null') .. ',"tools":' .. tools_json(tools, step_id)
    .. ',"from_status":"in_progress","to_status":"' .. STEP_NAMES[to] .. '","occurred_at":'
    .. occurred .. ',"step_type":' .. encode(step_type) .. ',"duration_s":'
    .. (duration and number(duration) or 'null')
    .. ',"usage":null,"last_error":null,"ended_by_run":true}'
  return to, state, event
end

local at = BATCH.acks + 1 + nacks  -- the next argument to read
local key_at = 4  -- the last run hash's key
local nargs = #ARGV
while at <= nargs do
  key_at = key_at + 1
  local run = KEYS[key_at]
  local nops, run_id, thread, assistant = tonumber(ARGV[at]), ARGV[at + 1], ARGV[at + 2],
    ARGV[at + 3]
  at = at + 4
  -- One HMGET for the run: its fixed fields, then each subject the group names (an op's
  -- field is its first argument).
  local want, want_at = {unpack(FIXED)}, {}
  local scan = at
  for _ = 1, nops do
    local f = ARGV[scan]
    if not want_at[f] then
      want[#want + 1] = f
      want_at[f] = #want
    end
    scan = scan + (byte(f, 1) == STEP_BYTE and STEP_ARGS or RUN_ARGS)
  end
  local got = chunked('HMGET', run, want, 4000)
  local current = {}  -- each subject's state string, as this group leaves it
  current[F.state] = got[AT_RUN]
  for f, pos in pairs(want_at) do
    current[f] = got[pos]
  end
  -- The group names another thread or assistant than the run's: its naming entries clash.
  local clash = (thread ~= '' and got[AT_THREAD] and got[AT_THREAD] ~= thread)
    or (assistant ~= '' and got[AT_ASSISTANT] and got[AT_ASSISTANT] ~= assistant)
  local live = tonumber(got[AT_LIVE]) or 0
  local live_before, ended = live, false
  local rounds = got[AT_ROUNDS] or ''
  local current_model = got[AT_MODEL]  -- as JSON, or nil
  local started = tonumber(got[AT_STARTED]) or 0  -- steps started, for the steps budget
  local started_before = started
  local exceeded = got[AT_EXCEEDED] or ''  -- budgets passed: each published once
  local reported_cost = got[AT_COST] or ''  -- the cost fields a run's own usage reported
  local current_prices = false  -- parsed when first used
  local out, touched = {}, {}  -- fields to write, in first-written order
  local function set(f, v)
    if not touched[f] then
      touched[f] = true
      out[#out + 1] = f
    end
    current[f] = v
  end
  local totals, counts  -- read lazily from `got`, kept as numbers
  local function load_counts()
    local loaded = {}
    for c = 1, #ENDED do loaded[c] = tonumber(got[AT_ENDED + c]) or 0 end
    return loaded
  end
  local function json_or_null(value)
    return (value and value ~= '') and encode(value) or 'null'
  end
  -- Ends `step_id` (state `now`) with its run's end: state, counts, stall index; its event
  -- goes into `into`, published before the run's own end.
  local function close(step_id, now, run_code, occurred, into)
    local f = STEP_PREFIX .. step_id
    local to, state, event = ended_by_run(run_id, step_id, now, run_code, occurred,
      json_or_null(got[AT_THREAD] or (not clash and thread) or nil),
      json_or_null(got[AT_ASSISTANT] or (not clash and assistant) or nil),
      current[TOOLS_PREFIX .. step_id] or call('HGET', run, TOOLS_PREFIX .. step_id))
    set(f, state)
    counts = counts or load_counts()
    counts[ENDED_AT[to]] = counts[ENDED_AT[to]] + 1
    into[#into + 1] = event
    also[#also + 1] = event  -- for the domain metrics: its step type, tools, duration
    return f
  end
  -- A budget passed: its event (once per run and limit) goes into `into`.
  local function exceed(limit, value, event, into)
    local budget = BUDGET[limit]
    local reached = tonumber(value)  -- nil for a null cost: an unpriced run passes no budget
    if not budget or not reached or reached <= budget[1] then return end
    if find(',' .. exceeded .. ',', ',' .. limit .. ',', 1, true) then return end
    exceeded = exceeded == '' and limit or (exceeded .. ',' .. limit)
    set(F.exceeded, exceeded)
    local ids = '"source":"' .. match(event, '"source":"(%a+)"') .. '","run_id":'
      .. encode(run_id) .. ',"thread_id":'
      .. json_or_null(got[AT_THREAD] or (not clash and thread) or nil) .. ',"assistant_id":'
      .. json_or_null(got[AT_ASSISTANT] or (not clash and assistant) or nil)
    into[#into + 1] = budget_event(run_id, ids, current_model, limit, budget[2], value,
      match(event, ',"occurred_at":([^,}]*)'))
    also[#also + 1] = 'run.budget_exceeded|' .. limit
  end
  for _ = 1, nops do
    local field, source_id, status, names, state, deadline, start_event, end_event, usage,
      usage_event, tools, round, wait_event, model, prices, usage_cost
    local step = byte(ARGV[at], 1) == STEP_BYTE
    local run_closed, late_closed  -- step ends a run's end (or a late start) published
    -- Budget events this entry's op published, after its own (none while no budget is set:
    -- `exceed` adds only for a limit that is set).
    local passed = BUDGETED and {} or NO_EVENTS
    if step then
      field, source_id, status, names, state, deadline, start_event, end_event, usage,
        usage_event, tools = unpack(ARGV, at, at + STEP_ARGS - 1)
      at = at + STEP_ARGS
    else
      field, source_id, status, names, state, start_event, end_event, usage, usage_event,
        round, wait_event, model, prices, usage_cost = unpack(ARGV, at,
        at + RUN_ARGS - 1)
      at = at + RUN_ARGS
    end
    local subject = step and sub(field, 2) or ''  -- a step's id; a run's own: ''
    local now = current[field]
    local have = now and sub(now, 1, 1) or ''
    local act = (step and STEP or RUN)[have .. status]
    if clash and names ~= '' then
      act = ACT.IDENTITY_MISMATCH
      held[source_id] = true
    else
      acks[#acks + 1] = source_id
      if model and model ~= '' and model ~= current_model then
        -- The run's model (and its prices) as its payloads name it: the latest wins.
        current_model = model
        set(F.model, model)
        if prices ~= '' then
          current_prices = parse_prices(prices)
          set(F.prices, prices)
        end
      end
    end
    -- The state's effects of the action.
    if act == REJECT then
      local refused = match(now, REFUSED)
      if byte(refused, 1) == BY_RUN_BYTE then
        act = ACT.LATE  -- ended by its run: its own end comes too late
      elseif find(refused, status, 1, true) then
        act = ACT.DUPLICATE  -- refused already: one rejection per status
      else
        set(field, sub(now, 1, 2) .. refused .. status .. sub(now, 3 + #refused))
        ended = true
      end
    elseif act == START or act == WAIT_START then
      set(field, state)
      local run_now = current[F.state]
      local run_code = run_now and sub(run_now, 1, 1)
      if step and run_code and BY_RUN.assistants[run_code] then
        -- Its run has ended already: the step takes the run's end at once.
        late_closed = {}
        close(subject, state, run_code, run_ended_at(run_now) or
          match(start_event, ',"occurred_at":([^,}]*)'), late_closed)
        ended = true
      else
        live = live + 1
        if step then
          adds[#adds + 1] = deadline
          adds[#adds + 1] = stall_member(run_id, subject)
        elseif BUDGET.seconds then
          local since = tonumber(match(start_event, ',"occurred_at":([^,}]*)'))
          badds[#badds + 1] = since + BUDGET.seconds[1]
          badds[#badds + 1] = budget_member(match(start_event, '"source":"(%a+)"'),
            run_id)
        end
      end
    elseif act == MOVE or act == AWAIT then
      set(field, state)
    elseif act == END or act == BEGIN_END then
      set(field, state)
      ended = true
      if act == END then
        live = live - 1
        if step then rems[#rems + 1] = stall_member(run_id, subject) end
      end
      if not step then
        if BUDGET.seconds then
          brems[#brems + 1] = budget_member(match(end_event, '"source":"(%a+)"'), run_id)
        end
        local duration = reported(end_event, 'duration_s')
        if duration then exceed('seconds', duration, end_event, passed) end
        local cost = reported(end_event, 'cost_usd')
        if cost then exceed('usd', cost, end_event, passed) end
      end
      if not step and live > 0 then
        -- No step outlives its run: those still in progress take its end. (A run that
        -- ends with none open, live = 0, reads nothing more.)
        local occurred = match(end_event, ',"occurred_at":([^,]*),')
        run_closed = {}
        local all = call('HGETALL', run)
        local open = {}
        for i = 1, #all, 2 do
          local f = all[i]
          if byte(f, 1) == STEP_BYTE and not touched[f] then
            if sub(all[i + 1], 1, 1) == IN_PROGRESS then
              open[#open + 1] = f
              current[f] = all[i + 1]
            end
          elseif byte(f, 1) == TOOLS_BYTE and not current[f] then
            current[f] = all[i + 1]  -- its calls, for its end event
          end
        end
        for _, f in ipairs(out) do
          if byte(f, 1) == STEP_BYTE and sub(current[f], 1, 1) == IN_PROGRESS then
            open[#open + 1] = f
          end
        end
        for _, f in ipairs(open) do
          local step_id = sub(f, 2)
          close(step_id, current[f], status, occurred, run_closed)
          live = live - 1
          rems[#rems + 1] = stall_member(run_id, step_id)
        end
      end
      counts = counts or load_counts()
      if step then
        counts[ENDED_AT[status]] = counts[ENDED_AT[status]] + 1
        if usage ~= '' then
          if not totals then
            totals = {}
            for t = 1, 4 do totals[t] = tonumber(got[AT_TOTALS + t]) or 0 end
          end
          local p, c, t = match(usage, '^(%d+),(%d+),(%d+)$')
          totals[1], totals[2] = totals[1] + tonumber(p), totals[2] + tonumber(c)
          totals[3], totals[4] = totals[3] + tonumber(t), totals[4] + 1
        end
      elseif usage ~= '' then  -- a response's own totals (Responses): they replace the sums
        local p, c, t = match(usage, '^(%d+),(%d+),(%d+)$')
        local ended_steps = 0
        for i = 1, #ENDED do ended_steps = ended_steps + counts[i] end
        totals = {tonumber(p), tonumber(c), tonumber(t), ended_steps}
      end
    end
    if BUDGET.steps and step and (act == START or act == BEGIN_END) then
      started = started + 1  -- counted while the budget is set
      exceed('steps', started, act == START and start_event or end_event, passed)
    end
    if BUDGET.tokens and totals and usage ~= '' and (act == END or act == BEGIN_END)
    then
      exceed('tokens', count(totals[3]), end_event, passed)
    end
    if tools and tools ~= '' and (act == START or act == END or act == BEGIN_END)
    then
      -- Its calls as its latest applied entry lists them (core/layout.py encode_tools),
      -- for its stalls and its run's end while it is in progress, and for the query API:
      -- an Assistants stream creates a tool step with none, its end lists them.
      set(TOOLS_PREFIX .. subject, tools)
    end
    if act == WAIT_START or act == AWAIT then
      -- A round of tool calls is published once, whatever order its events come in (a
      -- round naming no call has no key: the move into requires_action publishes it).
      if round ~= '' and find(',' .. rounds .. ',', ',' .. round .. ',', 1, true) then
        act = act == AWAIT and MOVE or START  -- published already: say so
      elseif round ~= '' then
        rounds = rounds == '' and round or (rounds .. ',' .. round)
        set(F.rounds, rounds)
      end
    end
    -- What the action publishes (PUBLISHES), in the declared order.
    local publishes = (step and PUBLISHES.step or PUBLISHES.run)[act]
    if publishes then
      if publishes.start then
        publish(act == BEGIN_END and built_start(step, run_id, subject, end_event,
          start_event) or start_event)
      end
      if publishes.wait then
        publish(spliced(wait_event, act == AWAIT and RUN_NAMES[have] or nil))
      end
      if late_closed then
        for _, event in ipairs(late_closed) do publish(event) end
      end
      if step and publishes['end'] then publish(end_event) end  -- a step's end, then usage
      if publishes.usage and usage ~= '' then  -- a run's usage, then its end
        if current_prices == false then current_prices = parse_prices(got[AT_PRICES]) end
        local usage_published = publish_usage(usage_event, totals, current_model,
          current_prices, usage_cost or '')
        if (usage_cost or '') ~= reported_cost then
          -- The query API answers the cost this reported: the run's own usage's, or ('')
          -- its totals priced as this run.usage priced them.
          reported_cost = usage_cost or ''
          set(F.cost, reported_cost)
        end
        if BUDGET.usd then
          local cost = reported(usage_published, 'cost_usd')
          if cost then exceed('usd', cost, end_event, passed) end
        end
      end
      if not step and publishes['end'] then
        if run_closed then
          for _, event in ipairs(run_closed) do publish(event) end
        end
        publish(format(
          '%s,"steps":{"completed":%d,"failed":%d,"cancelled":%d,"expired":%d,'
          .. '"incomplete":%d}}', spliced(end_event, act == END and RUN_NAMES[have]
          or 'in_progress'), counts[1], counts[2], counts[3], counts[4], counts[5]))
      end
      if publishes.rejection then
        local names_of = step and STEP_NAMES or RUN_NAMES
        publish(built_rejection(step, run_id, subject, end_event, names_of[have],
          names_of[status]))
      end
    end
    if passed ~= NO_EVENTS then
      for _, event in ipairs(passed) do publish(event) end
    end
    results[#results + 1] = act
  end
  if #out > 0 then
    local fields = {}
    for _, f in ipairs(out) do
      fields[#fields + 1] = f
      fields[#fields + 1] = current[f]
    end
    if not clash and not got[AT_THREAD] and thread ~= '' then
      fields[#fields + 1], fields[#fields + 2] = F.thread, thread
    end
    if not clash and not got[AT_ASSISTANT] and assistant ~= '' then
      fields[#fields + 1], fields[#fields + 2] = F.assistant, assistant
    end
    if started ~= started_before then
      fields[#fields + 1], fields[#fields + 2] = F.started, format('%d', started)
    end
    if live ~= live_before then
      live = math.max(0, live)
      fields[#fields + 1], fields[#fields + 2] = F.live, format('%d', live)
    end
    if totals then
      for t = 1, 4 do
        fields[#fields + 1] = TOTALS[t]
        fields[#fields + 1] = count(totals[t])
      end
    end
    if counts then
      for c = 1, #ENDED do
        fields[#fields + 1] = ENDED[c]
        fields[#fields + 1] = format('%d', counts[c])
      end
    end
    chunked('HSET', run, fields, 4000)  -- field-value pairs: n is even
    if live > 0 then
      if live_before == 0 then
        call('PERSIST', run)  -- its first live subject: it expires no more
      end
    elseif ended or live_before > 0 then
      call('EXPIRE', run, ttl)
    elseif call('TTL', run) == -1 then
      call('EXPIRE', run, ttl)  -- nothing live and nothing ended: keep it bounded
    end
  end
end
-- Adds before removals: a step that starts and ends in one batch leaves no member. (A
-- step is never removed and then added: it ends only once.)
chunked('ZADD', stalls, adds, 1000)  -- score-member pairs: n is even
chunked('ZREM', stalls, rems, 1000)
chunked('ZADD', budget_index, badds, 1000)
chunked('ZREM', budget_index, brems, 1000)
-- An entry's ops are all held or none (they share its identity); held wins over acked.
local acked = {}
for _, sid in ipairs(acks) do
  if not held[sid] then acked[#acked + 1] = sid end
end
for i = 1, #acked, 1000 do
  call('XACK', source, group, unpack(acked, i, math.min(i + 999, #acked)))
end
return {table.concat(results), also}
