-- Publish one run_step.stalled event, once across all workers: only the worker whose ZREM
-- takes the step off the stall index publishes, and only if the step is still in progress.
-- KEYS: 1 stall zset, 2 step state (a string), 3 derived stream
-- ARGV: 1 step id, 2 derived maxlen, 3 event json
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
-- The step's state string starts 'version|status code|'; 'i' is in_progress.
local state = redis.call('GET', KEYS[2])
if not state or string.match(state, '^[^|]*|([^|]*)') ~= 'i' then
  return 0
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3])
return 1
