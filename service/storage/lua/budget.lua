-- Publish one run.budget_exceeded (seconds) for a run still in progress past its time
-- budget, once across all workers: only the worker whose ZREM takes the run off the
-- seconds-budget index publishes, and only if the run has not ended nor passed it before.
-- KEYS: 1 seconds-budget index, 2 the run's hash, 3 derived stream
-- ARGV: 1 index member, 2 run id, 3 the event's ids (source .. assistant_id, JSON),
--       4 the budget as given, 5 seconds in progress, 6 now, 7 derived maxlen
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local state = redis.call('HGET', KEYS[2], F.state)
if state and BY_RUN.assistants[string.sub(state, 1, 1)] then
  return 0  -- ended meanwhile (its end checked its duration)
end
local exceeded = redis.call('HGET', KEYS[2], F.exceeded) or ''
if string.find(',' .. exceeded .. ',', ',seconds,', 1, true) then
  return 0
end
redis.call('HSET', KEYS[2], F.exceeded, exceeded == '' and 'seconds' or (exceeded .. ',seconds'))
local model = redis.call('HGET', KEYS[2], F.model)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'data',
  budget_event(ARGV[2], ARGV[3], model, 'seconds', ARGV[4], ARGV[5], ARGV[6]))
return 1
