"""The Lua behind :mod:`routing.breaker`: every transition reads, changes and rewrites a
model's hash in one script, so it is atomic across threads, processes and pods.

Each script is ``PRELUDE`` followed by its body; the policy and the time come first in ARGV.
"""

__all__ = ["ALLOW", "FORCE_OPEN", "PEEK", "PRELUDE", "RECORD"]

# Shared by every script. ARGV[1] is the policy (JSON), ARGV[2] the time ('' = Redis TIME).
PRELUDE = """
local P = cjson.decode(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local B = P.buckets

local function fmt(x) return string.format('%.17g', x) end
local function num(h, f) return tonumber(h[f]) or 0 end

local function load(key)
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end

local function store(key, h)
  redis.call('DEL', key)
  local args = {}
  for f, v in pairs(h) do args[#args + 1] = f; args[#args + 1] = v end
  redis.call('HSET', key, unpack(args))
  local until_ = num(h, 'opened_until')
  if not (h.state == 'open' and until_ < 0) then
    local ttl = math.max(until_ - now, 0) + P.keep_s
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
  end
end

local function state_of(h)
  if h.state ~= 'open' then return 'closed' end
  local until_ = num(h, 'opened_until')
  if until_ < 0 or now < until_ then return 'open' end
  return 'half_open'
end

local function shown_until(h)
  if h.state ~= 'open' then return '' end
  return num(h, 'opened_until') < 0 and 'inf' or h.opened_until
end

local function streak(h)
  if h.state ~= 'open' and (h.closed_at == nil or now - num(h, 'closed_at') >= P.window_s) then
    return 0
  end
  return num(h, 'open_count')
end

local function window(h)
  local id = math.floor(now / P.bucket_s)
  local calls, failures, slow = 0, 0, 0
  for i = 0, B - 1 do
    local b = tonumber(h['b' .. i])
    if b and b > id - B then
      calls = calls + num(h, 'c' .. i)
      failures = failures + num(h, 'f' .. i)
      slow = slow + num(h, 's' .. i)
    end
  end
  return calls, failures, slow
end

local function clear_window(h)
  for i = 0, B - 1 do
    h['b' .. i], h['c' .. i], h['f' .. i], h['s' .. i] = nil, nil, nil, nil
  end
end

local function open(h, count, u)
  local period = math.min(P.open_s * P.backoff ^ (count - 1), P.max_open_s) * (1 - P.jitter * u)
  clear_window(h)
  h.state, h.opened_until, h.open_count = 'open', fmt(now + period), fmt(count)
  h.forced, h.probe_token, h.probe_until = nil, nil, nil
end

local function summary(h)
  local calls, failures, slow = window(h)
  local free = (h.probe_token == nil or num(h, 'probe_until') <= now) and 1 or 0
  return {state_of(h), calls, failures, slow, shown_until(h), streak(h), h.forced and 1 or 0, free}
end
"""

# ARGV[3]: a fresh probe token.
ALLOW = """
local key = KEYS[1]
local h = load(key)
local s = state_of(h)
if s == 'closed' then return {1, s, '', ''} end
if s == 'open' then return {0, s, '', shown_until(h)} end
if h.probe_token ~= nil and num(h, 'probe_until') > now then return {0, s, '', h.probe_until} end
h.probe_token, h.probe_until = ARGV[3], fmt(now + P.probe_lease_s)
store(key, h)
return {1, s, ARGV[3], ''}
"""

# ARGV[3..7]: ok ('1'/'0'), latency_s, retryable ('1'/'0'), probe token or '', jitter draw.
RECORD = """
local key = KEYS[1]
local h = load(key)
local s = state_of(h)
local failed = ARGV[3] == '0' and ARGV[5] == '1'
local slow = tonumber(ARGV[4]) >= P.slow_call_s
local u = tonumber(ARGV[7])
if s == 'closed' then
  local id = math.floor(now / P.bucket_s)
  local i = id % B
  if (tonumber(h['b' .. i]) or -1) < id then
    h['b' .. i], h['c' .. i], h['f' .. i], h['s' .. i] = fmt(id), '0', '0', '0'
  end
  h['c' .. i] = fmt(num(h, 'c' .. i) + 1)
  if failed then h['f' .. i] = fmt(num(h, 'f' .. i) + 1) end
  if slow then h['s' .. i] = fmt(num(h, 's' .. i) + 1) end
  h.state = 'closed'
  local calls, failures, slow_calls = window(h)
  -- Divide rather than multiply: 3 / 10 >= 0.3 holds in floating point, 3 >= 0.3 * 10 does not.
  if calls >= P.min_calls and (failures / calls >= P.failure_rate
      or slow_calls / calls >= P.slow_call_rate) then
    open(h, streak(h) + 1, u)
  end
  store(key, h)
elseif ARGV[6] ~= '' and ARGV[6] == h.probe_token then
  if failed or slow then open(h, streak(h) + 1, u) else
    h.state, h.closed_at, h.opened_until = 'closed', fmt(now), nil
    h.forced, h.probe_token, h.probe_until = nil, nil, nil
  end
  store(key, h)
end
return summary(h)
"""

# ARGV[3]: seconds to hold open, or '' to hold until force_close.
FORCE_OPEN = """
local key = KEYS[1]
local h = load(key)
local seconds = tonumber(ARGV[3])
clear_window(h)
h.state, h.forced, h.probe_token, h.probe_until = 'open', '1', nil, nil
h.opened_until = seconds and fmt(now + seconds) or '-1'
store(key, h)
return summary(h)
"""

PEEK = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = summary(load(key)) end
return out
"""
