-- Fenced write of one shard's records (replica::redis::writer).
-- KEYS[1]   idp:epoch:shard:<n>
-- KEYS[i+1] the i-th record key
-- ARGV[1]   the epoch the writer holds
-- ARGV[2i], ARGV[2i+1]  the i-th record: Unix ms expiry and value, or "0" and "" to delete it
-- Returns {1} when applied, {0, current epoch} when fenced (nothing written).
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return {0, current}
end
for i = 2, #KEYS do
  local expires_at_ms = ARGV[2 * (i - 1)]
  if expires_at_ms == '0' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], ARGV[2 * (i - 1) + 1], 'PXAT', expires_at_ms)
  end
end
return {1}
