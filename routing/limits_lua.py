"""The Lua behind :mod:`routing.limits`: checking and reserving a deployment's rate in one
atomic step, so every worker on every pod draws from the same sliding-window log.
"""

__all__ = ["ACQUIRE", "BLOCK", "HEADROOM", "RECONCILE", "RELEASE"]

_LIB = """
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
-- Drop grants at or before `since` from the log, and their tokens from the running sum.
local function purge(log, tokens, since)
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', fmt(since), 'LIMIT', 0, 1000)
    if #old == 0 then return end
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', tokens, unpack(old))) do
      freed = freed + (tonumber(amount) or 0)
    end
    redis.call('ZREM', log, unpack(old))
    redis.call('HDEL', tokens, unpack(old))
    redis.call('HINCRBY', tokens, 'sum', -freed)
  end
end
"""

# KEYS: log, tokens, block. ARGV: now, window, rpm (0: none), tpm (0: none), tokens, grant id.
ACQUIRE = (
    _LIB
    + """
local now, window = clock(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, want = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
if blocked > now then return {0, 'blocked', fmt(blocked - now), fmt(now)} end
purge(KEYS[1], KEYS[2], now - window)
local wait, limit = 0, ''
if rpm > 0 then
  local count = redis.call('ZCARD', KEYS[1])
  if count >= rpm then
    -- The grant whose ageing-out leaves rpm - 1 in the window.
    local frees = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
    wait, limit = tonumber(frees[2]) + window - now, 'rpm'
  end
end
if tpm > 0 then
  local excess = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0') + want - tpm
  if excess > 0 then
    -- Walk the oldest grants until enough tokens have aged out.
    local tpm_wait, start, freed = window, 0, 0
    while freed < excess do
      local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
      if #page == 0 then break end
      local ids = {}
      for i = 1, #page, 2 do ids[#ids + 1] = page[i] end
      local amounts = redis.call('HMGET', KEYS[2], unpack(ids))
      for j = 1, #ids do
        freed = freed + (tonumber(amounts[j]) or 0)
        if freed >= excess then
          tpm_wait = tonumber(page[2 * j]) + window - now
          break
        end
      end
      start = start + 100
    end
    if tpm_wait > wait then wait, limit = tpm_wait, 'tpm' end
  end
end
if limit ~= '' then return {0, limit, fmt(wait), fmt(now)} end
redis.call('ZADD', KEYS[1], fmt(now), ARGV[6])
redis.call('HSET', KEYS[2], ARGV[6], want)
redis.call('HINCRBY', KEYS[2], 'sum', want)
local ttl = math.ceil(window * 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, '', fmt(0), fmt(now)}
"""
)

# KEYS: tokens. ARGV: grant id, actual tokens. A grant already aged out has nothing to correct.
# Setting (not adding) makes a repeat harmless: the second run moves the sum by 0.
RECONCILE = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if not before then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'sum', tonumber(ARGV[2]) - tonumber(before))
return 1
"""

# KEYS: log, tokens. ARGV: grant id.
RELEASE = """
local amount = redis.call('HGET', KEYS[2], ARGV[1])
if not amount then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'sum', -tonumber(amount))
return 1
"""

# KEYS: block. ARGV: now, seconds. A block is only ever extended, never shortened.
BLOCK = (
    _LIB
    + """
local now, seconds = clock(ARGV[1]), tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + seconds > current then
  redis.call('SET', KEYS[1], fmt(now + seconds), 'PX', math.max(1, math.ceil(seconds * 1000)))
  return fmt(seconds)
end
return fmt(current - now)
"""
)

# KEYS: log, tokens, block. ARGV: now, window.
HEADROOM = (
    _LIB
    + """
local now = clock(ARGV[1])
purge(KEYS[1], KEYS[2], now - tonumber(ARGV[2]))
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0') - now
local used = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0')
return {redis.call('ZCARD', KEYS[1]), used, fmt(math.max(0, blocked))}
"""
)
