-- Publish one run_step.stalled event, once across all workers: only the worker whose ZREM
-- takes the step off the stall index publishes, and only if the step is still in progress.
-- KEYS: 1 stall zset, 2 the step's run hash, 3 derived stream
-- ARGV: 1 stall index member, 2 step id, 3 derived maxlen, 4 event json
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
-- The step's state string starts with its status code.
local state = redis.call('HGET', KEYS[2], STEP_PREFIX .. ARGV[2])
if not state or string.sub(state, 1, 1) ~= IN_PROGRESS then
  return 0
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'data', ARGV[4])
return 1
