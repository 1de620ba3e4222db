-- Acquire leases: mirrors replica::lease::decide_acquire (an integration test runs both over the same cases).
-- KEYS[2i-1], KEYS[2i]  idp:lease:<name>, idp:epoch:<name> of the i-th lease
-- ARGV[1] node, ARGV[2] ttl in ms, ARGV[3] silence in ms (0: none), ARGV[4..] the live members
-- Returns one entry per lease: {1, epoch} when taken, {0, holder, epoch, pttl} when a live node holds it, or a node
-- declared dead that renewed it less than the silence ago (cut off from the caller, not from Redis); pttl is the
-- lease's remaining time to live in ms (-1: no expiry).
local node, ttl_ms, silence_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local live = {}
for i = 4, #ARGV do
  live[ARGV[i]] = true
end
local outcomes = {}
for i = 1, #KEYS, 2 do
  local stored = redis.call('GET', KEYS[i])
  local holder, held_epoch = nil, nil
  if stored then
    holder, held_epoch = string.match(stored, '^(.*) (%d+)$')
  end
  local renewing, remaining = false, -1
  if holder then
    -- PTTL: -1 without expiry (silent forever); a lease younger than the silence is still being renewed.
    remaining = redis.call('PTTL', KEYS[i])
    renewing = silence_ms > 0 and remaining >= 0 and tonumber(ttl_ms) - remaining < silence_ms
  end
  if holder and #held_epoch <= 18 and holder ~= node and (live[holder] or renewing) then
    outcomes[#outcomes + 1] = {0, holder, held_epoch, remaining}
  else
    local epoch = redis.call('INCR', KEYS[i + 1])
    local epoch_text = string.format('%d', epoch)
    redis.call('SET', KEYS[i], node .. ' ' .. epoch_text, 'PX', ttl_ms)
    outcomes[#outcomes + 1] = {1, epoch_text}
  end
end
return outcomes
