-- Take off the stall index every member whose step can no longer stall: its state is gone
-- (expired, evicted, deleted) or no longer in progress. Read and removed in one step, so a
-- member a commit has just written again (the step started anew) is kept.
-- KEYS: 1 stall zset, then each member's run hash
-- ARGV: per member, in KEYS order: the member, its step id
-- Returns the positions (1-based) of the members kept: their steps are in progress.
local kept = {}
for i = 2, #KEYS do
  local member, step = ARGV[2 * i - 3], ARGV[2 * i - 2]
  -- The step's state string starts with its status code.
  local state = redis.call('HGET', KEYS[i], STEP_PREFIX .. step)
  if state and string.sub(state, 1, 1) == IN_PROGRESS then
    kept[#kept + 1] = i - 1
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return kept
