-- Release leases still held (graceful hand-over); the epochs stay. Mirrors replica::lease::holds.
-- KEYS[i] idp:lease:<name> of the i-th lease; ARGV[1] node, ARGV[i+1] the i-th epoch
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] .. ' ' .. ARGV[i + 1] then
    redis.call('DEL', KEYS[i])
  end
end
return 1
