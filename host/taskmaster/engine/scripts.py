"""The Lua scripts behind every job transition: one atomic step each, on one queue's slot.

Times are the server's (`TIME`), never the caller's. History events arrive as JSON objects
without a time; scripts stamp them with `at_ms` as they append them. Members of the
queue's sets and lists are job keys; per-job keys are built from the queue's prefix,
which carries the queue's hash tag.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function stamp(event, now)
  if event == '{}' then return '{"at_ms":' .. now .. '}' end
  return '{"at_ms":' .. now .. ',' .. string.sub(event, 2)
end
local LEVELS = {'CRITICAL', 'HIGH', 'NORMAL', 'LOW'}
local LEVEL_INDEX = {CRITICAL = 1, HIGH = 2, NORMAL = 3, LOW = 4}
local function wake(key)
  redis.call('LPUSH', key, 1)
  redis.call('LTRIM', key, 0, 15)
end
-- Metrics: per-minute buckets (kept two hours) and running totals, per function|version.
local DURATION_BUCKETS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}
local function count(prefix, now, field, n)
  local bucket = prefix .. 'metrics:' .. math.floor(now / 60000)
  -- A bucket always starts with a new field, so expiring on a field's first write
  -- covers every bucket at a fraction of the calls.
  if redis.call('HINCRBY', bucket, field, n) == n then redis.call('EXPIRE', bucket, 7260) end
  redis.call('HINCRBY', prefix .. 'totals', field, n)
end
local function observe(prefix, now, field, ms)
  local le = '+Inf'
  for _, bound in ipairs(DURATION_BUCKETS) do
    if ms <= bound then le = tostring(bound) break end
  end
  count(prefix, now, field .. ':le:' .. le, 1)
  count(prefix, now, field .. ':sum_ms', math.floor(ms))
end
-- Every history event goes to the job's history, the queue's event stream and the metrics.
local function note(prefix, fn, id, event, now)
  local stamped = stamp(event, now)
  redis.call('RPUSH', prefix .. 'history:' .. id, stamped)
  redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', 100000, '*',
             'job', id, 'fn', fn, 'event', stamped)
  local e = cjson.decode(stamped)
  local field = fn .. '|' .. (type(e.version) == 'string' and e.version or '') .. '|'
  count(prefix, now, field .. e.type, 1)
  if type(e.wait_ms) == 'number' then observe(prefix, now, field .. 'wait', e.wait_ms) end
  if type(e.run_ms) == 'number' then observe(prefix, now, field .. 'run', e.run_ms) end
end
"""

# KEYS: job, history, queued:<level>, scheduled, priority, index, idem, idem-of, wake
# ARGV: key, record, event, level, delay_ms, run_at_ms (0: none), idempotency key ('': none),
#       function, key prefix
ENQUEUE = """
local now = now_ms()
if ARGV[7] ~= '' then
  local existing = redis.call('HGET', KEYS[7], ARGV[7])
  if existing then return {0, existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
redis.call('SET', KEYS[1], ARGV[2])
note(ARGV[9], ARGV[8], ARGV[1], ARGV[3], now)
redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[6], now, ARGV[1])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[7], ARGV[7], ARGV[1])
  redis.call('HSET', KEYS[8], ARGV[1], ARGV[7])
end
local due = tonumber(ARGV[6])
if due == 0 then due = now + tonumber(ARGV[5]) end
if due > now then
  redis.call('ZADD', KEYS[4], due, ARGV[1])
else
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
-- Also for a scheduled job: a blocked fetch loop must learn of the earlier due time.
wake(KEYS[9])
return {1, ARGV[1]}
"""

# KEYS: queued:CRITICAL..LOW (4), scheduled, active, lease, priority, swrr, stalls, suspects
# ARGV: max jobs, lease_ms, worker id, weight CRITICAL..LOW (4), key prefix, 1 if the worker
#       runs nothing right now (it may take a suspect, alone)
# Returns {{key, token, level, record, stalls}...}, ms until the next scheduled job (-1: none),
# suspects waiting.
CLAIM = """
local now = now_ms()
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[5], id)
  local level = redis.call('HGET', KEYS[8], id) or 'NORMAL'
  redis.call('RPUSH', KEYS[LEVEL_INDEX[level] or 3], id)
end
local function lease(id, level)
  local token = ARGV[3] .. ':' .. redis.call('INCR', ARGV[8] .. 'lease-seq')
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[2]), id)
  redis.call('HSET', KEYS[7], id, token)
  local record = redis.call('GET', ARGV[8] .. 'job:' .. id)
  local stalls = redis.call('HGET', KEYS[10], id) or '0'
  return {id, token, level, record or '', stalls}
end
local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
local suspects = redis.call('LLEN', KEYS[11])
if suspects > 0 and ARGV[9] == '1' then
  -- A job whose worker died runs alone, so a second death is its own doing.
  local id = redis.call('LPOP', KEYS[11])
  return {{lease(id, redis.call('HGET', KEYS[8], id) or 'NORMAL')}, wait, suspects - 1}
end
local credit = redis.call('HMGET', KEYS[9], 'CRITICAL', 'HIGH', 'NORMAL', 'LOW')
local c, lens = {}, {}
for i = 1, 4 do
  c[i] = tonumber(credit[i]) or 0
  lens[i] = redis.call('LLEN', KEYS[i])
end
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  -- Smooth weighted round-robin over the levels that have jobs: exact shares in every
  -- cycle, and an empty level's share goes to the others.
  local total, best = 0, nil
  for i = 1, 4 do
    if lens[i] > 0 then
      local w = tonumber(ARGV[3 + i])
      c[i] = c[i] + w
      total = total + w
      if best == nil or c[i] > c[best] then best = i end
    else
      c[i] = 0
    end
  end
  if best == nil then break end
  c[best] = c[best] - total
  lens[best] = lens[best] - 1
  table.insert(out, lease(redis.call('LPOP', KEYS[best]), LEVELS[best]))
end
redis.call('HSET', KEYS[9], 'CRITICAL', c[1], 'HIGH', c[2], 'NORMAL', c[3], 'LOW', c[4])
return {out, wait, suspects}
"""

# KEYS: job, history, lease
# ARGV: key, token, record, event ('': none), status, function, key prefix
UPDATE = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then note(ARGV[7], ARGV[6], ARGV[1], ARGV[4], now_ms()) end
redis.call('PUBLISH', KEYS[1], ARGV[5])
return 1
"""

# KEYS: active, lease   ARGV: lease_ms, key1, token1, key2, token2, ...
# Returns the keys whose lease this worker no longer holds.
HEARTBEAT = """
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: job, history, active, lease, priority, stalls, cancel, done-or-dead
# ARGV: key, token ('': the caller already owns the job), record, event, second event
#       ('': none), keep_ms, status, function, key prefix
FINISH = """
local now = now_ms()
if ARGV[2] ~= '' and redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
for i = 4, 7 do redis.call('HDEL', KEYS[i], ARGV[1]) end
redis.call('SET', KEYS[1], ARGV[3])
note(ARGV[9], ARGV[8], ARGV[1], ARGV[4], now)
if ARGV[5] ~= '' then note(ARGV[9], ARGV[8], ARGV[1], ARGV[5], now) end
redis.call('ZADD', KEYS[8], now + tonumber(ARGV[6]), ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[7])
return 1
"""

# KEYS: job, history, active, lease, scheduled, queued:<level>, wake, cancel
# ARGV: key, token, record, event, delay_ms, function, key prefix
RETRY = """
local now = now_ms()
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[8], ARGV[1])
redis.call('SET', KEYS[1], ARGV[3])
note(ARGV[7], ARGV[6], ARGV[1], ARGV[4], now)
local delay = tonumber(ARGV[5])
if delay > 0 then
  redis.call('ZADD', KEYS[5], now + delay, ARGV[1])
else
  redis.call('RPUSH', KEYS[6], ARGV[1])
end
wake(KEYS[7])
redis.call('PUBLISH', KEYS[1], 'queued')
return 1
"""

# KEYS: job, history, queued:CRITICAL..LOW (4), scheduled, active, priority, done, cancel,
#       suspects, parked:<function>
# ARGV: key, cancelled record, cancelled event, keep_ms, cancel-requested event, function,
#       key prefix
# Returns 1 cancelled now, 2 running (cancel requested), 0 not cancellable.
CANCEL = """
local now = now_ms()
local removed = redis.call('ZREM', KEYS[7], ARGV[1]) + redis.call('LREM', KEYS[12], 0, ARGV[1])
  + redis.call('LREM', KEYS[13], 0, ARGV[1])
for i = 3, 6 do removed = removed + redis.call('LREM', KEYS[i], 0, ARGV[1]) end
if removed > 0 then
  redis.call('HDEL', KEYS[9], ARGV[1])
  redis.call('SET', KEYS[1], ARGV[2])
  note(ARGV[7], ARGV[6], ARGV[1], ARGV[3], now)
  redis.call('ZADD', KEYS[10], now + tonumber(ARGV[4]), ARGV[1])
  redis.call('PUBLISH', KEYS[1], 'aborted')
  return 1
end
if redis.call('ZSCORE', KEYS[8], ARGV[1]) then
  if redis.call('HSETNX', KEYS[11], ARGV[1], 1) == 1 then
    note(ARGV[7], ARGV[6], ARGV[1], ARGV[5], now)
  end
  return 2
end
return 0
"""

# KEYS: history, priority, queued:CRITICAL..LOW (4), scheduled, active, suspects,
#       parked:<function>
# ARGV: key, new level, event, function, key prefix
# Returns 1 moved, 2 unchanged, -1 running, 0 finished or unknown.
SET_PRIORITY = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
if redis.call('ZSCORE', KEYS[8], ARGV[1]) then return -1 end
if old == ARGV[2] then return 2 end
local waiting = redis.call('ZSCORE', KEYS[7], ARGV[1]) or redis.call('LPOS', KEYS[9], ARGV[1])
  or redis.call('LPOS', KEYS[10], ARGV[1])
if not waiting then
  if redis.call('LREM', KEYS[2 + LEVEL_INDEX[old]], 0, ARGV[1]) == 0 then return 0 end
  redis.call('RPUSH', KEYS[2 + LEVEL_INDEX[ARGV[2]]], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
note(ARGV[5], ARGV[4], ARGV[1], ARGV[3], now_ms())
return 1
"""

# KEYS: job, history, active, lease, parked:<function>, parked-functions
# ARGV: key, token, record, event ('': none), function, key prefix
# Sets a claimed job aside until a worker can run its function; its attempt is not spent.
PARK = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then note(ARGV[6], ARGV[5], ARGV[1], ARGV[4], now_ms()) end
redis.call('RPUSH', KEYS[5], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[5])
return 1
"""

# KEYS: parked:<function>, parked-functions, priority, queued:CRITICAL..LOW (4), wake
# ARGV: function
# Returns how many parked jobs went back to the front of their level.
UNPARK = """
local moved = 0
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local level = redis.call('HGET', KEYS[3], id) or 'NORMAL'
  redis.call('LPUSH', KEYS[3 + (LEVEL_INDEX[level] or 3)], id)
  moved = moved + 1
end
redis.call('SREM', KEYS[2], ARGV[1])
if moved > 0 then wake(KEYS[8]) end
return moved
"""

# KEYS: job, history, dead, done, queued:<level>, priority, wake
# ARGV: key, record, event, level, function, key prefix
# Puts a finished job back in its queue; 0 if it is not finished (or already requeued).
REQUEUE = """
if redis.call('ZREM', KEYS[3], ARGV[1]) + redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
note(ARGV[6], ARGV[5], ARGV[1], ARGV[3], now_ms())
redis.call('HSET', KEYS[6], ARGV[1], ARGV[4])
redis.call('RPUSH', KEYS[5], ARGV[1])
wake(KEYS[7])
redis.call('PUBLISH', KEYS[1], 'queued')
return 1
"""

_REMOVE = """
local function remove(prefix, id, index, idem, idem_of)
  redis.call('DEL', prefix .. 'job:' .. id, prefix .. 'history:' .. id)
  redis.call('ZREM', index, id)
  local k = redis.call('HGET', idem_of, id)
  if k then
    redis.call('HDEL', idem, k)
    redis.call('HDEL', idem_of, id)
  end
end
"""

# KEYS: dead, index, idem, idem-of   ARGV: key prefix, key
PURGE = _REMOVE + """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
remove(ARGV[1], ARGV[2], KEYS[2], KEYS[3], KEYS[4])
return 1
"""

# KEYS: done, dead, index, idem, idem-of   ARGV: key prefix, max completed kept (0: no
# limit), most removals per run
RETENTION = _REMOVE + """
local now = now_ms()
local limit = tonumber(ARGV[3])
local removed = 0
for _, z in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', z, id)
    remove(ARGV[1], id, KEYS[3], KEYS[4], KEYS[5])
    removed = removed + 1
  end
end
local most = tonumber(ARGV[2])
if most > 0 then
  local extra = math.min(redis.call('ZCARD', KEYS[1]) - most, limit)
  if extra > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
      redis.call('ZREM', KEYS[1], id)
      remove(ARGV[1], id, KEYS[3], KEYS[4], KEYS[5])
      removed = removed + 1
    end
  end
end
return removed
"""

# KEYS: active, lease, stalls, priority, suspects, wake, cancel
# ARGV: max stalls, key prefix
# Returns {requeued keys}, {{poison key, stalls}}, {cancelled keys}.
RECLAIM = """
local now = now_ms()
local requeued, poison, cancelled = {}, {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 200)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  local stalls = redis.call('HINCRBY', KEYS[3], id, 1)
  if redis.call('HDEL', KEYS[7], id) == 1 then
    table.insert(cancelled, id)
  elseif stalls >= tonumber(ARGV[1]) then
    table.insert(poison, {id, stalls})
  else
    redis.call('RPUSH', KEYS[5], id)
    local record = redis.call('GET', ARGV[2] .. 'job:' .. id)
    local fn = record and cjson.decode(record)['function'] or ''
    note(ARGV[2], fn, id, '{"type":"recovered","message":"the worker running it stopped' ..
      ' renewing its lease (stall ' .. stalls .. ' of ' .. ARGV[1] .. ' allowed); requeued"}',
      now)
    redis.call('PUBLISH', ARGV[2] .. 'job:' .. id, 'queued')
    table.insert(requeued, id)
  end
end
if #requeued > 0 then wake(KEYS[6]) end
return {requeued, poison, cancelled}
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts registered on one client (EVALSHA, loaded on first use)."""

    enqueue: AsyncScript
    claim: AsyncScript
    update: AsyncScript
    heartbeat: AsyncScript
    finish: AsyncScript
    retry: AsyncScript
    cancel: AsyncScript
    set_priority: AsyncScript
    requeue: AsyncScript
    park: AsyncScript
    unpark: AsyncScript
    purge: AsyncScript
    retention: AsyncScript
    reclaim: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        sources = {"enqueue": ENQUEUE, "claim": CLAIM, "update": UPDATE,
                   "heartbeat": HEARTBEAT, "finish": FINISH, "retry": RETRY,
                   "cancel": CANCEL, "set_priority": SET_PRIORITY, "requeue": REQUEUE,
                   "park": PARK, "unpark": UNPARK,
                   "purge": PURGE, "retention": RETENTION, "reclaim": RECLAIM}
        return cls(**{name: redis.register_script(_PRELUDE + source)
                      for name, source in sources.items()})
