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
-- `at` as a string where it can be: Lua formats a number with sprintf, which costs a hot
-- path more than anything else it does per event.
local function stamp(event, at)
  if event == '{}' then return '{"at_ms":' .. at .. '}' end
  return '{"at_ms":' .. at .. ',' .. string.sub(event, 2)
end
local LEVELS = {'CRITICAL', 'HIGH', 'NORMAL', 'LOW'}
local LEVEL_INDEX = {CRITICAL = 1, HIGH = 2, NORMAL = 3, LOW = 4}
local function wake(key)
  if redis.call('LPUSH', key, 1) > 16 then redis.call('LTRIM', key, 0, 15) end
end
-- Variadic commands in slices, under Lua's limit on unpacked arguments.
local function bulk(command, key, args)
  for i = 1, #args, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end
-- Metrics: per-minute buckets (kept two hours) and running totals, per function|version,
-- added up over a script's events first so each field costs two calls per script. Field
-- names are built once per script call and function|version, not once per event.
local DURATION_BUCKETS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}
local names_of = {}
local function metric_names(fn, version)
  local versions = names_of[fn]
  if versions == nil then
    versions = {}
    names_of[fn] = versions
  end
  local names = versions[version]
  if names == nil then
    names = {base = fn .. '|' .. version .. '|', types = {}}
    versions[version] = names
  end
  return names
end
-- The field names of one duration histogram ('wait' or 'run'), each built on first use.
local function histogram(names, kind)
  local fields = names[kind]
  if fields == nil then
    local base = names.base .. kind
    fields = {le = base .. ':le:', sum = base .. ':sum_ms'}
    names[kind] = fields
  end
  return fields
end
-- The bucket of a duration: the index of the first bound it does not exceed (14: +Inf).
-- Unrolled: a loop over the bounds cost more than the rest of a job's bookkeeping.
local function bucket_of(ms)
  if ms <= 100 then
    if ms <= 10 then return ms <= 5 and 1 or 2 end
    if ms <= 25 then return 3 end
    return ms <= 50 and 4 or 5
  end
  if ms <= 1000 then
    if ms <= 250 then return 6 end
    return ms <= 500 and 7 or 8
  end
  if ms <= 10000 then
    if ms <= 2500 then return 9 end
    return ms <= 5000 and 10 or 11
  end
  if ms <= 30000 then return 12 end
  return ms <= 60000 and 13 or 14
end
-- ms: a whole number (events carry whole milliseconds)
local function observe(counts, fields, ms)
  local i = bucket_of(ms)
  local field = fields[i]
  if field == nil then
    field = fields.le .. (DURATION_BUCKETS[i] or '+Inf')
    fields[i] = field
  end
  counts[field] = (counts[field] or 0) + 1
  counts[fields.sum] = (counts[fields.sum] or 0) + ms
end
local function count_event(counts, names, type)
  local field = names.types[type]
  if field == nil then
    field = names.base .. type
    names.types[type] = field
  end
  counts[field] = (counts[field] or 0) + 1
end
-- ev: {json, type, version, wait_ms (-1: none), run_ms (-1: none), 1 if the json carries
--      its at_ms already (else 0: stamp it now)}
local function tally(counts, fn, ev)
  local names = metric_names(fn, ev[3])
  count_event(counts, names, ev[2])
  if ev[4] >= 0 then observe(counts, histogram(names, 'wait'), ev[4]) end
  if ev[5] >= 0 then observe(counts, histogram(names, 'run'), ev[5]) end
end
local function save_counts(prefix, now, counts)
  local bucket = prefix .. 'metrics:' .. math.floor(now / 60000)
  for field, n in pairs(counts) do
    -- A bucket always starts with a new field, so expiring on a field's first write
    -- covers every bucket at a fraction of the calls.
    if redis.call('HINCRBY', bucket, field, n) == n then redis.call('EXPIRE', bucket, 7260) end
    redis.call('HINCRBY', prefix .. 'totals', field, n)
  end
end
-- The event stream: a cold path's event is an entry of its own (fields job, fn, event);
-- the events of a batched script go EVENTS_PER_ENTRY to an entry (field batch: a JSON
-- array of [job key, function, event]), so a job costs the stream a fraction of a
-- command. Entries are bounded in size so that one read of the stream stays small (a
-- subscriber that keeps up must never be handed more than its buffer at once) and a
-- fixed number of them is kept: from ENTRIES_KEPT events (all alone) to ENTRIES_KEPT *
-- EVENTS_PER_ENTRY (all batched), whatever mix came before.
local ENTRIES_KEPT = 20000
local EVENTS_PER_ENTRY = 20
local function publish(prefix, fn, id, stamped)
  redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ENTRIES_KEPT, '*',
             'job', id, 'fn', fn, 'event', stamped)
end
-- A batched stream item is item_head(id, fn) .. stamped event .. ']'; a job's events share
-- the head.
local function item_head(id, fn)
  return '[' .. cjson.encode(id) .. ',' .. cjson.encode(fn) .. ','
end
local function publish_batch(prefix, items)
  for first = 1, #items, EVENTS_PER_ENTRY do
    local last = math.min(first + EVENTS_PER_ENTRY - 1, #items)
    redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ENTRIES_KEPT, '*',
               'batch', '[' .. table.concat(items, ',', first, last) .. ']')
  end
end
-- One event of a cold path: to the job's history, the event stream and the metrics.
local function note(prefix, fn, id, event, now)
  local stamped = stamp(event, now)
  redis.call('RPUSH', prefix .. 'history:' .. id, stamped)
  publish(prefix, fn, id, stamped)
  local e = cjson.decode(stamped)
  local counts = {}
  tally(counts, fn, {stamped, e.type, type(e.version) == 'string' and e.version or '',
                     type(e.wait_ms) == 'number' and e.wait_ms or -1,
                     type(e.run_ms) == 'number' and e.run_ms or -1})
  save_counts(prefix, now, counts)
end
"""

# KEYS: queued:CRITICAL..LOW (4), scheduled, priority, index, idem, idem-of, wake
# ARGV: key prefix, msgpack list of jobs, each {key, record, submitted event, level,
#       delay_ms, run_at_ms (0: none), idempotency key ('': none), function}
# Returns {{1 created | 0 existing, key}...}: an idempotency key in use, or a job key
# that exists, gives the existing job's key.
ENQUEUE = """
local now = now_ms()
local now_s = tostring(now)
local prefix = ARGV[1]
local out, counts, published = {}, {}, {}
local index, levels, scheduled, queued = {}, {}, {}, {{}, {}, {}, {}}
local jobs = cmsgpack.unpack(ARGV[2])
-- The records of jobs without an idempotency key go in one MSETNX per 500 (keys are
-- fresh UUIDv7s, so all are new in the usual case). If a key exists or repeats, that
-- slice is set by nothing and its jobs are tried one by one below.
local fresh = {}
for first = 1, #jobs, 500 do
  local records, members, seen, unique = {}, {}, {}, true
  for i = first, math.min(first + 499, #jobs) do
    local job = jobs[i]
    if job[7] == '' then
      if seen[job[1]] then unique = false end
      seen[job[1]] = true
      table.insert(records, prefix .. 'job:' .. job[1])
      table.insert(records, job[2])
      table.insert(members, i)
    end
  end
  if unique and #records > 0 and redis.call('MSETNX', unpack(records)) == 1 then
    for _, i in ipairs(members) do fresh[i] = true end
  end
end
for i, job in ipairs(jobs) do
  local id, idem, fn = job[1], job[7], job[8]
  local existing = idem ~= '' and redis.call('HGET', KEYS[8], idem)
  if existing then
    out[i] = {0, existing}
  elseif not fresh[i] and not redis.call('SET', prefix .. 'job:' .. id, job[2], 'NX') then
    out[i] = {0, id}
  else
    local stamped = stamp(job[3], now_s)
    redis.call('RPUSH', prefix .. 'history:' .. id, stamped)
    table.insert(published, item_head(id, fn) .. stamped .. ']')
    count_event(counts, metric_names(fn, ''), 'submitted')
    table.insert(index, now)
    table.insert(index, id)
    table.insert(levels, id)
    table.insert(levels, job[4])
    if idem ~= '' then
      redis.call('HSET', KEYS[8], idem, id)
      redis.call('HSET', KEYS[9], id, idem)
    end
    local due = job[6]
    if due == 0 then due = now + job[5] end
    if due > now then
      table.insert(scheduled, due)
      table.insert(scheduled, id)
    else
      table.insert(queued[LEVEL_INDEX[job[4]]], id)
    end
    out[i] = {1, id}
  end
end
if #index > 0 then
  bulk('ZADD', KEYS[7], index)
  bulk('HSET', KEYS[6], levels)
  if #scheduled > 0 then bulk('ZADD', KEYS[5], scheduled) end
  for level = 1, 4 do
    if #queued[level] > 0 then bulk('RPUSH', KEYS[level], queued[level]) end
  end
  -- Also for scheduled jobs: a blocked fetch loop must learn of an earlier due time.
  wake(KEYS[10])
  publish_batch(prefix, published)
  save_counts(prefix, now, counts)
end
return out
"""

# KEYS: queued:CRITICAL..LOW (4), scheduled, active, lease, priority, swrr, stalls, suspects,
#       attempts
# ARGV: max jobs, lease_ms, worker id, weight CRITICAL..LOW (4), key prefix, 1 if the worker
#       runs nothing right now (it may take a suspect, alone)
# Returns {{key, level, record, stalls, attempt}...}, the claim's lease token ('' if it took
# nothing), ms until the next scheduled job (-1: none), suspects waiting, the server's time (ms).
CLAIM = """
local now = now_ms()
local prefix = ARGV[8]
local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local due = {}
if first[2] and tonumber(first[2]) <= now then
  due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)
end
if #due > 0 then
  bulk('ZREM', KEYS[5], due)
  local levels = redis.call('HMGET', KEYS[8], unpack(due))
  local back = {{}, {}, {}, {}}
  for i, id in ipairs(due) do table.insert(back[LEVEL_INDEX[levels[i]] or 3], id) end
  for level = 1, 4 do
    if #back[level] > 0 then bulk('RPUSH', KEYS[level], back[level]) end
  end
end
if #due > 0 then first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES') end
local wait = -1
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
local suspects = redis.call('LLEN', KEYS[11])
local ids, levels = {}, {}
if suspects > 0 and ARGV[9] == '1' then
  -- A job whose worker died runs alone, so a second death is its own doing.
  ids[1] = redis.call('LPOP', KEYS[11])
  levels[1] = redis.call('HGET', KEYS[8], ids[1]) or 'NORMAL'
  suspects = suspects - 1
else
  local credit = redis.call('HMGET', KEYS[9], 'CRITICAL', 'HIGH', 'NORMAL', 'LOW')
  local c, lens, take, picks = {}, {}, {0, 0, 0, 0}, {}
  for i = 1, 4 do
    c[i] = tonumber(credit[i]) or 0
    lens[i] = redis.call('LLEN', KEYS[i])
  end
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
    take[best] = take[best] + 1
    table.insert(picks, best)
  end
  redis.call('HSET', KEYS[9], 'CRITICAL', c[1], 'HIGH', c[2], 'NORMAL', c[3], 'LOW', c[4])
  local popped, next_of = {}, {1, 1, 1, 1}
  for i = 1, 4 do
    if take[i] > 0 then popped[i] = redis.call('LPOP', KEYS[i], take[i]) end
  end
  -- A job in the lists twice (never expected) is leased once: the claim's jobs share one
  -- lease token, which could not tell two copies apart.
  local seen = {}
  for _, level in ipairs(picks) do
    local id = popped[level][next_of[level]]
    next_of[level] = next_of[level] + 1
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
      levels[#levels + 1] = LEVELS[level]
    end
  end
end
if #ids == 0 then return {{}, '', wait, suspects, now} end
-- One lease token for the whole claim: a job claimed again later gets another.
local token = ARGV[3] .. ':' .. redis.call('INCR', prefix .. 'lease-seq')
local deadline = now + tonumber(ARGV[2])
local leased, holders = {}, {}
for i, id in ipairs(ids) do
  leased[2 * i - 1] = deadline
  leased[2 * i] = id
  holders[2 * i - 1] = id
  holders[2 * i] = token
end
bulk('ZADD', KEYS[6], leased)
bulk('HSET', KEYS[7], holders)
local any_stalls = redis.call('HLEN', KEYS[10]) > 0
local out = {}
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  local keys = {}
  for j = i, last do keys[j - i + 1] = prefix .. 'job:' .. ids[j] end
  local found = redis.call('MGET', unpack(keys))
  local stalled = any_stalls and redis.call('HMGET', KEYS[10], unpack(ids, i, last)) or {}
  -- Attempt numbers: read and written back with one call each, not one HINCRBY per job.
  local counted = redis.call('HMGET', KEYS[12], unpack(ids, i, last))
  local numbers = {}
  for j = i, last do
    local attempt = (tonumber(counted[j - i + 1]) or 0) + 1
    numbers[#numbers + 1] = ids[j]
    numbers[#numbers + 1] = attempt
    out[j] = {ids[j], levels[j], found[j - i + 1] or '', stalled[j - i + 1] or '0', attempt}
  end
  redis.call('HSET', KEYS[12], unpack(numbers))
end
return {out, token, wait, suspects, now}
"""

# KEYS: active, lease, priority, stalls, cancel, done, dead, scheduled,
#       queued:CRITICAL..LOW (4), wake, parked-functions, attempts
# ARGV: key prefix, msgpack list of operations, in order, each
#       {kind, key, token ('': not fenced), function, record ('': unchanged), {events},
#        number, level}; kinds:
#   W  write the record and events of a running attempt (start, progress)
#   C  completed/cancelled: to the done set, kept `number` ms
#   D  dead-lettered: to the dead set, kept `number` ms
#   R  retry: back to its level after `number` ms
#   Q  requeue (the worker stopped): back to its level at once, the attempt not spent
#   P  park: set aside until a worker can run its function; the attempt not spent
# An operation whose lease token no longer holds does nothing. Returns {1 | 0 ...}.
APPLY = """
local now = now_ms()
local now_s = tostring(now)
local prefix = ARGV[1]
local ops = cmsgpack.unpack(ARGV[2])
local ids = {}
for i, op in ipairs(ops) do ids[i] = op[2] end
local held = {}
for i = 1, #ids, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #part do held[ids[i + j - 1]] = part[j] end
end
local results, counts, records, published = {}, {}, {}, {}
local ended, finished, done, dead, scheduled = {}, {}, {}, {}, {}
local queued, parked = {{}, {}, {}, {}}, {}
for i, op in ipairs(ops) do
  local kind, id, token, fn = op[1], op[2], op[3], op[4]
  if token ~= '' and held[id] ~= token then
    results[i] = 0
  else
    results[i] = 1
    if op[5] ~= '' then
      records[#records + 1] = prefix .. 'job:' .. id
      records[#records + 1] = op[5]
    end
    local events = op[6]
    if #events > 0 then
      -- In operation order, so two operations of one job keep their events' order.
      local stamped, head = {}, item_head(id, fn)
      for j, ev in ipairs(events) do
        local one = ev[6] > 0 and ev[1] or stamp(ev[1], now_s)
        stamped[j] = one
        published[#published + 1] = head .. one .. ']'
        tally(counts, fn, ev)
      end
      redis.call('RPUSH', prefix .. 'history:' .. id, unpack(stamped))
    end
    if kind ~= 'W' then
      held[id] = nil  -- the attempt is over: later operations of it are stale
      ended[#ended + 1] = id
      if kind == 'C' or kind == 'D' then
        finished[#finished + 1] = id
        local into = kind == 'C' and done or dead
        into[#into + 1] = now + op[7]
        into[#into + 1] = id
      elseif kind == 'R' or kind == 'Q' then
        if kind == 'Q' then redis.call('HINCRBY', KEYS[15], id, -1) end
        if op[7] > 0 then
          scheduled[#scheduled + 1] = now + op[7]
          scheduled[#scheduled + 1] = id
        else
          local level = queued[LEVEL_INDEX[op[8]] or 3]
          level[#level + 1] = id
        end
      else
        redis.call('HINCRBY', KEYS[15], id, -1)
        parked[fn] = parked[fn] or {}
        table.insert(parked[fn], id)
      end
    end
  end
end
for i = 1, #records, 1000 do
  redis.call('MSET', unpack(records, i, math.min(i + 999, #records)))
end
-- Cancel requests and stall counts are rare: skip their deletes when there are none.
if #ended > 0 then
  bulk('ZREM', KEYS[1], ended)
  bulk('HDEL', KEYS[2], ended)
  if redis.call('HLEN', KEYS[5]) > 0 then bulk('HDEL', KEYS[5], ended) end
end
if #finished > 0 then
  bulk('HDEL', KEYS[3], finished)
  if redis.call('HLEN', KEYS[4]) > 0 then bulk('HDEL', KEYS[4], finished) end
  bulk('HDEL', KEYS[15], finished)
end
if #done > 0 then bulk('ZADD', KEYS[6], done) end
if #dead > 0 then bulk('ZADD', KEYS[7], dead) end
local woken = #scheduled > 0
if woken then bulk('ZADD', KEYS[8], scheduled) end
for level = 1, 4 do
  if #queued[level] > 0 then
    bulk('RPUSH', KEYS[8 + level], queued[level])
    woken = true
  end
end
if woken then wake(KEYS[13]) end
for fn, list in pairs(parked) do
  bulk('RPUSH', prefix .. 'parked:' .. fn, list)
  redis.call('SADD', KEYS[14], fn)
end
publish_batch(prefix, published)
save_counts(prefix, now, counts)
return results
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
  redis.call('HDEL', ARGV[7] .. 'attempts', ARGV[1])
  redis.call('SET', KEYS[1], ARGV[2])
  note(ARGV[7], ARGV[6], ARGV[1], ARGV[3], now)
  redis.call('ZADD', KEYS[10], now + tonumber(ARGV[4]), ARGV[1])
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

# KEYS: job, history, dead, done, queued:<level>, priority, wake, attempts
# ARGV: key, record, event, level, function, key prefix, attempts so far
# Puts a finished job back in its queue; 0 if it is not finished (or already requeued).
REQUEUE = """
if redis.call('ZREM', KEYS[3], ARGV[1]) + redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
note(ARGV[6], ARGV[5], ARGV[1], ARGV[3], now_ms())
redis.call('HSET', KEYS[6], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[8], ARGV[1], ARGV[7])
redis.call('RPUSH', KEYS[5], ARGV[1])
wake(KEYS[7])
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
  -- Lease tokens are '<worker id>:<sequence>'.
  local worker = string.match(redis.call('HGET', KEYS[2], id) or '', '^(.*):[0-9]+$') or ''
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
    note(ARGV[2], fn, id, '{"type":"recovered","worker":' .. cjson.encode(worker) ..
      ',"message":"the worker running it stopped renewing its lease (stall ' .. stalls ..
      ' of ' .. ARGV[1] .. ' allowed); requeued"}', now)
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
    apply: AsyncScript
    cancel: AsyncScript
    set_priority: AsyncScript
    requeue: AsyncScript
    unpark: AsyncScript
    purge: AsyncScript
    retention: AsyncScript
    reclaim: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        sources = {"enqueue": ENQUEUE, "claim": CLAIM, "apply": APPLY,
                   "cancel": CANCEL, "set_priority": SET_PRIORITY, "requeue": REQUEUE,
                   "unpark": UNPARK,
                   "purge": PURGE, "retention": RETENTION, "reclaim": RECLAIM}
        return cls(**{name: redis.register_script(_PRELUDE + source)
                      for name, source in sources.items()})
