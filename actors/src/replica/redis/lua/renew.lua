-- Renew leases still held: mirrors replica::lease::holds.
-- KEYS[i] idp:lease:<name> of the i-th lease; ARGV[1] node, ARGV[2] ttl in ms, ARGV[i+2] the i-th epoch
-- Returns one integer per lease: 1 renewed, 0 lost.
local renewed = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] .. ' ' .. ARGV[i + 2] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
