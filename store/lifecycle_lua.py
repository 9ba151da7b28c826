"""The job state machine's transitions as Lua: each one atomic, each on the server's clock.

Every script checks the state it expects before it writes, so two workers (or a worker and
the reaper) can never both move the same job; the clock is Redis's ``TIME``, the one every
machine agrees on. :mod:`mailworker.store.lifecycle` is the Python face and documents the
table; the keys come from :mod:`mailworker.store.keys`.
"""

from __future__ import annotations

from mailworker.store.events import EMIT

# Shared prologue: `now` in seconds (ms precision) and helpers. Redis 7 replicates a
# script's effects, so TIME before a write is allowed (Redis 5/6 need the call below).
_PROLOGUE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + math.floor(tonumber(t[2]) / 1000) / 1000
local function keep(key, state, due, ttl)
  local life = ttl
  if due and (state == 'scheduled' or state == 'deferred' or state == 'paused') then
    life = math.max(ttl, math.ceil(due - now) + ttl)
  end
  redis.call('EXPIRE', key, life)
end
-- Members of the sorted set `index` whose score has come (at most `limit`), removed.
local function take_due(index, limit)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do redis.call('ZREM', index, id) end
  return ids
end
-- Back to `queued` (into the queued index `queued`), and onto `out` for publishing.
local function requeue(key, id, queued, out)
  redis.call('HSET', key, 'state', 'queued', 'queued_at', tostring(now),
    'updated_at', tostring(now))
  redis.call('HDEL', key, 'due', 'owner', 'lease_until')
  redis.call('ZADD', queued, now, id)
  local f = redis.call('HMGET', key, 'queue', 'task', 'payload')
  table.insert(out, id); table.insert(out, f[1] or ''); table.insert(out, f[2] or '')
  table.insert(out, f[3] or '')
end
"""

# KEYS: job, queued, due, events, expiring. ARGV: id, queue, task, account, attempt,
# created_at, payload, send_at ('' = now), ttl, revive ('1': a failed, cancelled or expired
# job starts again), events (JSON, '' = none), expires_at ('' = never).
# Returns {state, time}: queued_at, or the due time.
ENQUEUE = (
    _PROLOGUE
    + EMIT
    + """
local was = redis.call('HGET', KEYS[1], 'state')
if was then
  if ARGV[10] ~= '1' or not (was == 'failed' or was == 'cancelled' or was == 'expired') then
    return {'exists', ''}
  end
  redis.call('DEL', KEYS[1])
end
local send_at = tonumber(ARGV[8])
local state, at = 'queued', now
redis.call('HSET', KEYS[1], 'queue', ARGV[2], 'task', ARGV[3], 'account', ARGV[4],
  'attempt', ARGV[5], 'created_at', ARGV[6], 'payload', ARGV[7], 'rescues', 0,
  'updated_at', tostring(now))
if send_at and send_at > now then
  state, at = 'scheduled', send_at
  redis.call('HSET', KEYS[1], 'state', state, 'due', tostring(at), 'send_at', tostring(at))
  redis.call('ZADD', KEYS[3], at, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', state, 'queued_at', tostring(now))
  redis.call('ZADD', KEYS[2], now, ARGV[1])
end
if (ARGV[12] or '') ~= '' then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[12])
  redis.call('ZADD', KEYS[5], ARGV[12], ARGV[1])
end
keep(KEYS[1], state, at, tonumber(ARGV[9]))
emit(KEYS[4], ARGV[11] or '')
return {state, tostring(at)}
"""
)

# A waiting job whose time has come goes back to `queued` (the mover then publishes it).
# KEYS: due, queued. ARGV: job key prefix, limit. Returns id, queue, task, payload, ...
PROMOTE = (
    _PROLOGUE
    + """
local out = {}
for _, id in ipairs(take_due(KEYS[1], ARGV[2])) do
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'scheduled' or state == 'deferred' or state == 'paused' then
    requeue(key, id, KEYS[2], out)
  end
end
return out
"""
)

# A worker takes the job: `queued` (or `sending` whose lease has lapsed) -> `sending`, and
# reads in the same step what the attempt needs: who got a 250 already (the record's
# `sent:<address>` fields), which recipients are suppressed, and the account's pause.
# KEYS: job, queued, leased, mark (the queue's claimed high-water mark), suppressed, the
# account's pause. ARGV: id, owner, lease seconds, adopt payload ('' = none), queue, task,
# account, created_at, attempt, ttl, then the recipients' suppression-list forms.
# Returns {'busy', seconds} | {'skip', state} | {'claimed', payload, attempt, rescues,
# pause until, pause reason, n, n suppression flags ('' or '1'), sent addresses...}
CLAIM = (
    _PROLOGUE
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if ARGV[4] == '' then return {'skip', 'unknown'} end
  -- a message without a record (queued by an older producer, or its record expired)
  redis.call('HSET', KEYS[1], 'queue', ARGV[5], 'task', ARGV[6], 'account', ARGV[7],
    'created_at', ARGV[8], 'attempt', ARGV[9], 'payload', ARGV[4], 'rescues', 0,
    'state', 'queued', 'queued_at', tostring(now))
  state = 'queued'
end
if state == 'sending' then
  local f = redis.call('HMGET', KEYS[1], 'lease_until', 'owner')
  if f[2] == ARGV[2] then
    -- this very claim again (its pipeline ran twice): the same answer
  elseif tonumber(f[1] or '0') > now then
    return {'busy', tostring(tonumber(f[1]) - now)}
  else
    redis.call('HINCRBY', KEYS[1], 'rescues', 1)  -- its worker vanished mid-attempt
  end
elseif state ~= 'queued' then
  return {'skip', state}
end
local until_ = now + tonumber(ARGV[3])
local queued_at = tonumber(redis.call('HGET', KEYS[1], 'queued_at') or '0')
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until', tostring(until_),
  'owner', ARGV[2], 'updated_at', tostring(now))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], until_, ARGV[1])
if queued_at > tonumber(redis.call('GET', KEYS[4]) or '0') then
  redis.call('SET', KEYS[4], tostring(queued_at), 'EX', 86400)
end
keep(KEYS[1], 'sending', nil, tonumber(ARGV[10]))
local f = redis.call('HMGET', KEYS[1], 'payload', 'attempt', 'rescues')
local pause = redis.call('HMGET', KEYS[6], 'until', 'reason')
local out = {'claimed', f[1], f[2], f[3], pause[1] or '', pause[2] or '', #ARGV - 10}
if #ARGV > 10 then
  for _, reason in ipairs(redis.call('HMGET', KEYS[5], unpack(ARGV, 11))) do
    table.insert(out, reason and '1' or '')
  end
end
local fields = redis.call('HKEYS', KEYS[1])
for _, name in ipairs(fields) do
  if string.sub(name, 1, 5) == 'sent:' then table.insert(out, string.sub(name, 6)) end
end
return out
"""
)

# Recipients the server accepted, written down the moment it answered (the sent-ledger):
# fields of the job's record, so they live and end with it; each is counted once into the
# hour's rates (store.feedback: the denominator of the bounce and complaint rates).
# KEYS: job, rates. ARGV: addresses.
MARK_SENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local new = 0
for _, address in ipairs(ARGV) do
  new = new + redis.call('HSETNX', KEYS[1], 'sent:' .. address, '1')
end
if new > 0 then
  redis.call('HINCRBY', KEYS[2], 'sent', new)
  redis.call('EXPIRE', KEYS[2], 90000)
end
return 1
"""

# The holder extends its lease. KEYS: job, leased. ARGV: id, owner, lease seconds.
RENEW = (
    _PROLOGUE
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'owner')
if f[1] ~= 'sending' or f[2] ~= ARGV[2] then return 0 end
local until_ = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', tostring(until_))
redis.call('ZADD', KEYS[2], until_, ARGV[1])
return 1
"""
)

# The attempt's last word: `sending` (held by ARGV owner) -> the new state, with the
# record's fields, its index, the counters and a dead letter in the same step.
# KEYS: job, leased, due, counters (account stats or campaign counts), held (an account's
# pause or a campaign's parked batches), dead index, dead letter, the account's two
# failing-alarm keys (a 250 clears them: the account works), notes (why recipients failed),
# events.
# ARGV: id, owner, state, due ('' = none), delay ('' = none), fields (JSON object),
#       counts (JSON object), dead letter (JSON object or ''), ttl, dead retention,
#       held ('' = no, else the held set's TTL past the due time), notes (JSON object),
#       events (JSON array, '' = none).
# Returns {1, due} or {0, ''} when the lease was lost (another worker has the job).
SETTLE = (
    _PROLOGUE
    + EMIT
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'owner')
if f[1] ~= 'sending' or f[2] ~= ARGV[2] then return {0, ''} end
local state = ARGV[3]
local due = tonumber(ARGV[4])
if ARGV[5] ~= '' then due = now + tonumber(ARGV[5]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until', 'due', 'next_attempt_at')
redis.call('HSET', KEYS[1], 'state', state, 'updated_at', tostring(now))
for k, v in pairs(cjson.decode(ARGV[6])) do redis.call('HSET', KEYS[1], k, v) end
if due then
  redis.call('HSET', KEYS[1], 'due', tostring(due), 'next_attempt_at', tostring(due))
  redis.call('ZADD', KEYS[3], due, ARGV[1])
end
if ARGV[11] ~= '' then
  redis.call('ZADD', KEYS[5], due or now, ARGV[1])
  redis.call('EXPIRE', KEYS[5], math.max(1, math.ceil((due or now) - now)) + tonumber(ARGV[11]))
end
for k, v in pairs(cjson.decode(ARGV[7])) do
  if tonumber(v) ~= 0 then redis.call('HINCRBY', KEYS[4], k, v) end
end
for k, v in pairs(cjson.decode(ARGV[12])) do redis.call('HSET', KEYS[10], k, v) end
if ARGV[8] ~= '' then
  local retention = tonumber(ARGV[10])
  for k, v in pairs(cjson.decode(ARGV[8])) do redis.call('HSET', KEYS[7], k, v) end
  redis.call('HSET', KEYS[7], 'dead_at', tostring(now))
  redis.call('EXPIRE', KEYS[7], math.max(1, math.ceil(retention)))
  redis.call('ZADD', KEYS[6], now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - retention)
end
if state == 'sent' then redis.call('DEL', KEYS[8], KEYS[9]) end
emit(KEYS[11], ARGV[13] or '')
keep(KEYS[1], state, due, tonumber(ARGV[9]))
return {1, tostring(due or '')}
"""
)

# Leases that lapsed (their worker was killed or stalled): `sending` -> `queued`, to be
# published again. KEYS: leased, queued. ARGV: job key prefix, limit.
# Returns id, queue, task, payload, ...
REAP = (
    _PROLOGUE
    + """
local out = {}
for _, id in ipairs(take_due(KEYS[1], ARGV[2])) do
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'state', 'lease_until')
  if f[1] == 'sending' and tonumber(f[2] or '0') <= now then
    redis.call('HINCRBY', key, 'rescues', 1)
    requeue(key, id, KEYS[2], out)
  end
end
return out
"""
)

# A queued job whose broker message is gone gets a new queued_at (and is published again),
# unless it moved meanwhile. KEYS: job, queued. ARGV: id, the queued_at it was judged by.
# Returns {queue, task, payload} or {}.
REQUEUE_LOST = (
    _PROLOGUE
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'queued_at', 'queue', 'task', 'payload')
if f[1] ~= 'queued' or f[2] ~= ARGV[2] then return {} end
redis.call('HSET', KEYS[1], 'queued_at', tostring(now), 'updated_at', tostring(now))
redis.call('ZADD', KEYS[2], now, ARGV[1])
return {f[3] or '', f[4] or '', f[5] or ''}
"""
)

# An operator or the producer ends a job that is not being sent: cancelled / expired,
# counted in its account's stats. KEYS: job, queued, due, events. ARGV: id, state, reason,
# ttl, events (JSON, '' = none), stats key prefix. Returns the state it was in, or ''.
END_WAITING = (
    _PROLOGUE
    + EMIT
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'scheduled' and state ~= 'deferred' and state ~= 'paused' then
  return ''
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], 'due', 'next_attempt_at', 'queued_at')
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'error', ARGV[3], 'updated_at', tostring(now))
local account = redis.call('HGET', KEYS[1], 'account')
if account and (ARGV[6] or '') ~= '' then redis.call('HINCRBY', ARGV[6] .. account, ARGV[2], 1) end
keep(KEYS[1], ARGV[2], nil, tonumber(ARGV[4]))
emit(KEYS[4], ARGV[5] or '')
return state
"""
)

# Jobs whose expiry has come, taken off the expiring index (at most ARGV limit).
# KEYS: expiring. ARGV: limit. Returns their ids.
TAKE_EXPIRED = (
    _PROLOGUE
    + """
return take_due(KEYS[1], ARGV[1])
"""
)
