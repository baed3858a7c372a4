-- The decision inputs of a batch's steps in one call: status, version, rejected statuses.
-- KEYS: step hashes. Returns one {s, v, x} per key (nil where absent).
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 's', 'v', 'x')
end
return out
