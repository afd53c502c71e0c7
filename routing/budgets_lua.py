"""The Lua behind :mod:`routing.budgets`: each script checks or changes every budget a call
belongs to in one atomic step, after reclaiming the reservations past their expiry.
"""

__all__ = ["RELEASE", "RESERVE", "USAGE"]

# Every script gets KEYS in pairs, one pair per budget: the hash (fields `spent`, `reserved` and
# `r:<id>` per reservation) and the sorted set of reservation ids scored by expiry.
_PURGE = """
local function purge(state, held, now)
  while true do
    local expired = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, 500)
    if #expired == 0 then return end
    for _, id in ipairs(expired) do
      local amount = redis.call('HGET', state, 'r:' .. id)
      if amount then
        redis.call('HINCRBY', state, 'reserved', -tonumber(amount))
        redis.call('HDEL', state, 'r:' .. id)
      end
    end
    redis.call('ZREM', held, unpack(expired))
  end
end
local function totals(state)
  local found = redis.call('HMGET', state, 'spent', 'reserved')
  return tonumber(found[1]) or 0, tonumber(found[2]) or 0
end
"""

# ARGV: now, id, amount, expires at, then per budget: limit (-1: none), key ttl (s).
# Returns {1 if reserved, then per budget: spent + reserved before this call}.
RESERVE = (
    _PURGE
    + """
local now, id, amount, expires = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ok, out = 1, {}
for i = 1, #KEYS / 2 do
  purge(KEYS[2 * i - 1], KEYS[2 * i], now)
  local spent, reserved = totals(KEYS[2 * i - 1])
  local limit = tonumber(ARGV[3 + 2 * i])
  if limit >= 0 and spent + reserved + amount > limit then ok = 0 end
  out[i + 1] = spent + reserved
end
out[1] = ok
if ok == 0 then return out end
for i = 1, #KEYS / 2 do
  local state, held = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', state, 'reserved', amount)
  redis.call('HSET', state, 'r:' .. id, amount)
  redis.call('ZADD', held, expires, id)
  redis.call('EXPIRE', state, ARGV[4 + 2 * i])
  redis.call('EXPIRE', held, ARGV[4 + 2 * i])
end
return out
"""
)

# KEYS: the pairs, then the reservation's release marker. ARGV: id, charge (0 on refund),
# marker ttl (s), then per budget: key ttl (s), for a key the charge creates anew.
# Returns how many budgets still held the reservation, or -1 if it was released already: a
# retry whose first attempt ran (its reply lost) changes nothing.
RELEASE = """
local id, charge, still_held = ARGV[1], tonumber(ARGV[2]), 0
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[3]) then return -1 end
for i = 1, (#KEYS - 1) / 2 do
  local state, held = KEYS[2 * i - 1], KEYS[2 * i]
  local amount = redis.call('HGET', state, 'r:' .. id)
  if amount then
    redis.call('HINCRBY', state, 'reserved', -tonumber(amount))
    redis.call('HDEL', state, 'r:' .. id)
    redis.call('ZREM', held, id)
    still_held = still_held + 1
  end
  if charge > 0 then
    redis.call('HINCRBY', state, 'spent', charge)
    redis.call('EXPIRE', state, ARGV[3 + i], 'NX')
  end
end
return still_held
"""

# ARGV: now. Returns per budget: spent, reserved.
USAGE = (
    _PURGE
    + """
local out = {}
for i = 1, #KEYS / 2 do
  purge(KEYS[2 * i - 1], KEYS[2 * i], ARGV[1])
  out[2 * i - 1], out[2 * i] = totals(KEYS[2 * i - 1])
end
return out
"""
)
