"""The Lua of instances' approval states (issue #16): suspend, leave, and resume or time out once.

`WAIT` holds the functions the event scripts (`machine_scripts.py`) share with `SETTLE`: an
instance entering an approval state gets its continuation in the same script that moves it (the
id is generated in Python and passed in: Lua has no good randomness), and one leaving it by an
event or a deletion ends it (its outcome says why). They expect the locals `P` (the key prefix)
and `T` ({now = UTC ISO 8601, now_ms = epoch ms, retention = ms}) of the script they are in.

An approval as the scripts get it (in the transitions table, or from Python) is
`{ttl = timeout in ms | absent, notify = true | absent}`.

Every key shares the {machines} hash tag, so a continuation's record can be found from its id
alone (`stateservice:{machines}:continuation:ID`): no owner string outside the slot is needed.
"""

from __future__ import annotations

WAIT = """
-- the UTC ISO 8601 text of epoch milliseconds, as codec.timestamp writes it (Lua in Redis has no os.date)
local function iso(ms)
  local seconds = math.floor(ms / 1000)
  local days, rest = math.floor(seconds / 86400), seconds % 86400
  local z = days + 719468  -- days from civil (H. Hinnant), backwards
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60, (ms % 1000) * 1000)
end

-- instance `id` of `ref` now waits in approval state `state`: its continuation `cid`, timeout and notification
local function suspend(id, ref, state, approval, cid)
  local key = P .. ':continuation:' .. cid
  local expires = ''
  if approval.ttl then expires = iso(T.now_ms + approval.ttl) end
  redis.call('HSET', key, 'instance', id, 'configuration', ref, 'state', state, 'created_at', T.now,
    'expires_at', expires)
  redis.call('HSET', P .. ':continuations', id, cid)
  -- no expiry while it waits: a timeout the leader applies late (after a downtime) must still find it;
  -- `leave` gives it one with its outcome
  if approval.ttl then redis.call('ZADD', P .. ':timeouts', T.now_ms + approval.ttl, cid) end
  if approval.notify then redis.call('ZADD', P .. ':notify', T.now_ms, cid) end
end

-- instance `id` no longer waits for its continuation, if it has one: its record keeps `outcome`
-- (JSON text) or, when nil, one that gives `why`; kept for the retention
local function leave(id, why, outcome)
  local cid = redis.call('HGET', P .. ':continuations', id)
  if not cid then return end
  redis.call('HDEL', P .. ':continuations', id)
  redis.call('ZREM', P .. ':timeouts', cid)
  redis.call('ZREM', P .. ':notify', cid)
  local key = P .. ':continuation:' .. cid
  local state = redis.call('HGET', key, 'state')
  if state and not redis.call('HGET', key, 'outcome') then
    local text = outcome or cjson.encode({used = false, state = state, reason = why, at = T.now})
    redis.call('HSET', key, 'outcome', text)
    redis.call('PEXPIRE', key, T.retention)
  end
end

-- move instance `id` of `ref` from `from` to `to`, with its index sets, counts, history and change message
local function move(id, ref, from, to, record, limit)
  redis.call('HSET', KEYS[1], id, ref .. ' ' .. to)
  if to ~= from then
    redis.call('SMOVE', P .. ':in:' .. ref .. ':' .. from, P .. ':in:' .. ref .. ':' .. to, id)
    redis.call('HINCRBY', P .. ':counts:' .. ref, from, -1)
    redis.call('HINCRBY', P .. ':counts:' .. ref, to, 1)
  end
  local history = P .. ':history:' .. id
  redis.call('LPUSH', history, record)
  redis.call('LTRIM', history, 0, limit - 1)
  redis.call('PUBLISH', P .. ':changes', id .. ' ' .. from .. ' ' .. to)
end
"""

SETTLE = (
    """
-- KEYS[1] = the instances hash
-- ARGV[1] = the prefix, ARGV[2] = the continuation id, ARGV[3] = now (UTC ISO 8601), ARGV[4] = now (epoch ms),
-- ARGV[5] = retention (ms), ARGV[6] = history limit,
-- ARGV[7] = JSON {kind = "resume" | "timeout", state (the approval state left), to, history (the record's JSON
--   text), outcome (JSON text), context = the merged context's JSON text | absent, expected = the context's JSON
--   text the merge started from ("" for none), approval = {ttl, notify} of `to` | absent, cid = a new id}
-- returns {"ok", outcome} when moved; {"answered", outcome} when used or ended before; {"unknown"};
-- {"late"} (a resume after the timeout: time it out first); {"retry"} (the context changed since it was read)
local P = ARGV[1]
local T = {now = ARGV[3], now_ms = tonumber(ARGV[4]), retention = tonumber(ARGV[5])}
"""
    + WAIT
    + """
local cid, s = ARGV[2], cjson.decode(ARGV[7])
local key = P .. ':continuation:' .. cid
local id = redis.call('HGET', key, 'instance')
if not id then return {'unknown'} end
local prior = redis.call('HGET', key, 'outcome')
if prior then return {'answered', prior} end
local record = redis.call('HGET', KEYS[1], id)
if not record or redis.call('HGET', P .. ':continuations', id) ~= cid then
  -- the scripts end a continuation whenever its instance leaves; this is for one an operator removed by hand
  local text = cjson.encode({used = false, state = s.state, reason = 'the instance left the state', at = T.now})
  redis.call('HSET', key, 'outcome', text)
  redis.call('PEXPIRE', key, T.retention)
  return {'answered', text}
end
local space = string.find(record, ' ', 1, true)
local ref, state = string.sub(record, 1, space - 1), string.sub(record, space + 1)
if state ~= s.state then return {'retry'} end
local score = redis.call('ZSCORE', P .. ':timeouts', cid)
if s.kind == 'resume' then
  if score and tonumber(score) <= T.now_ms then return {'late'} end
  if (redis.call('HGET', P .. ':context', id) or '') ~= s.expected then return {'retry'} end
end
leave(id, '', s.outcome)
move(id, ref, state, s.to, s.history, tonumber(ARGV[6]))
if s.context then redis.call('HSET', P .. ':context', id, s.context) end
if s.approval then suspend(id, ref, s.to, s.approval, s.cid) end
return {'ok', s.outcome}
"""
)
