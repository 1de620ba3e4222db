-- Acquire leases: mirrors replica::lease::decide_acquire (an integration test runs both over the same cases).
-- KEYS[2i-1], KEYS[2i]  idp:lease:<name>, idp:epoch:<name> of the i-th lease
-- ARGV[1] node, ARGV[2] ttl in ms, ARGV[3..] the live members
-- Returns one entry per lease: {1, epoch} when taken, {0, holder, epoch} when a live node holds it.
local node, ttl_ms = ARGV[1], ARGV[2]
local live = {}
for i = 3, #ARGV do
  live[ARGV[i]] = true
end
local outcomes = {}
for i = 1, #KEYS, 2 do
  local stored = redis.call('GET', KEYS[i])
  local holder, held_epoch = nil, nil
  if stored then
    holder, held_epoch = string.match(stored, '^(.*) (%d+)$')
  end
  if holder and #held_epoch <= 18 and holder ~= node and live[holder] then
    outcomes[#outcomes + 1] = {0, holder, held_epoch}
  else
    local epoch = redis.call('INCR', KEYS[i + 1])
    local epoch_text = string.format('%d', epoch)
    redis.call('SET', KEYS[i], node .. ' ' .. epoch_text, 'PX', ttl_ms)
    outcomes[#outcomes + 1] = {1, epoch_text}
  end
end
return outcomes
