-- Dead-letter one source entry: XACK it and, only if this consumer's ack took it off the
-- pending list, XADD it to the DLQ. Two consumers racing on a claimed entry write one DLQ
-- entry, never two.
-- KEYS: 1 source stream, 2 dlq stream
-- ARGV: 1 group, 2 source id, 3 dlq maxlen, then field/value pairs of the DLQ entry
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local entry = {KEYS[2], 'MAXLEN', '~', ARGV[3], '*'}
for i = 4, #ARGV do
  entry[#entry + 1] = ARGV[i]
end
redis.call('XADD', unpack(entry))
return 1
