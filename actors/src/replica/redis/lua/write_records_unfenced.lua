-- TEST ONLY (testing.unfenced_writes, the chaos suite's I6 negative control): write_records.lua without the
-- epoch check, so a stale owner's writes land. Never selected unless that switch is on.
for i = 2, #KEYS do
  local expires_at_ms = ARGV[2 * (i - 1)]
  if expires_at_ms == '0' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], ARGV[2 * (i - 1) + 1], 'PXAT', expires_at_ms)
  end
end
return {1}
