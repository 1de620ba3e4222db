-- Fenced write of a cluster-wide document (the key ring's owner writes its document so).
-- KEYS[1] idp:epoch:<lease>, KEYS[2] idp:doc:<name>; ARGV[1] the writer's epoch, ARGV[2] the document.
-- Returns {1} when written, {0, current epoch} when fenced.
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return {0, current}
end
redis.call('SET', KEYS[2], ARGV[2])
return {1}
