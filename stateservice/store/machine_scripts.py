"""The Lua scripts that create instances and apply events: each one atomic, each one round trip.

Why Lua here, when charts use WATCH/MULTI: an event's transaction depends on what it reads (the
instance's configuration and state pick the transition, the transition may name a guard key),
and thousands of independent instances take events at once. WATCH/MULTI would need two round
trips and a retry on every conflict; a script needs one and never conflicts, so a batch of
events from one loop turn or one stream read costs one command. Every rule stays data: the
transition table (`transitions:REF`, written once from core/machines.py's Configuration) says
which state an event leads to and what it requires, and the script only looks it up.

Every key shares the {machines} hash tag; KEYS[1] is the instances hash and routes the script,
the others are built from ARGV[1] (the prefix). A guard naming a chart reads that chart's hash,
in another slot: fine on one Redis (or Sentinel), refused for a Cluster by store/machines.py.
"""

from __future__ import annotations

from stateservice.store.machine_approval_scripts import WAIT

# Shared by both scripts: make an instance at its starting state, with its indexes and counts (and its
# continuation, when it starts in an approval state). `T` is each script's: see machine_approval_scripts.
_CREATE = """
local function create(id, ref, c)
  redis.call('HSET', KEYS[1], id, ref .. ' ' .. c.start)
  redis.call('SADD', P .. ':in:' .. ref .. ':' .. c.start, id)
  redis.call('HINCRBY', P .. ':counts:' .. ref, c.start, 1)
  if c.properties then
    redis.call('HSET', P .. ':properties', id, c.properties)
    for _, key in ipairs(c.with) do redis.call('SADD', key, id) end
  end
  if c.approval then suspend(id, ref, c.start, c.approval, c.cid) end
end
"""


def _prelude(times: str) -> str:
    """The prefix, the script's times (`T`), and the shared functions."""
    return f"\nlocal P = ARGV[1]\nlocal T = {times}\n" + WAIT + _CREATE


CREATE = (
    _prelude("{now = ARGV[4], now_ms = tonumber(ARGV[5]), retention = tonumber(ARGV[6])}")
    + """
-- ARGV[2] = id, ARGV[3] = JSON {ref, start, properties (JSON text) | absent, with = [index keys],
--   approval = {ttl, notify} | absent (the starting state is an approval state), cid = its continuation id},
-- ARGV[4] = now (UTC ISO 8601), ARGV[5] = now (epoch ms), ARGV[6] = outcome retention (ms)
-- returns [1, record] when made, [0, record] when the id already existed (record: "REF STATE")
local found = redis.call('HGET', KEYS[1], ARGV[2])
if found then return {0, found} end
local c = cjson.decode(ARGV[3])
create(ARGV[2], c.ref, c)
return {1, c.ref .. ' ' .. c.start}
"""
)

APPLY = (
    _prelude("{now = ARGV[2], now_ms = tonumber(ARGV[9]), retention = tonumber(ARGV[3])}")
    + """
-- ARGV[2] = now (UTC ISO 8601), ARGV[3] = outcome retention (ms), ARGV[4] = history limit,
-- ARGV[5] = JSON list of events, each {id, event, event_id, history (a JSON object's text: the record
--   but for from and to), create = {ref, start, properties, with, approval, cid} | absent (first use creates),
--   entry = stream entry id | absent, dead = [field, value, ...] (what a dead letter carries),
--   cid = the continuation id to use if the event enters an approval state},
-- ARGV[6] = the events stream, ARGV[7] = its consumer group, ARGV[8] = the dead-letter stream,
-- ARGV[9] = now (epoch ms)
-- A transition into an approval state carries {ttl, notify} as `approval` in the transitions table.
-- returns JSON: for each event [its outcome (JSON text), 1 if it was a duplicate else 0]
local function refused(e, why, extra)
  local out = {event_id = e.event_id, outcome = why, instance = e.id, event = e.event}
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

local function requirement_met(spec)
  local got = redis.call('HGET', spec.key, spec.field)
  if got and spec.instance then got = string.sub(got, string.find(got, ' ', 1, true) + 1) end
  return got == spec.state
end

local function apply(e)
  local record = redis.call('HGET', KEYS[1], e.id)
  if not record then
    if not e.create then return refused(e, 'unknown_instance') end
    create(e.id, e.create.ref, e.create)
    record = e.create.ref .. ' ' .. e.create.start
  end
  local space = string.find(record, ' ', 1, true)
  local ref, state = string.sub(record, 1, space - 1), string.sub(record, space + 1)
  local spec = redis.call('HGET', P .. ':transitions:' .. ref, state .. ' ' .. e.event)
  if not spec then
    local waiting = redis.call('HGET', P .. ':continuations', e.id)
    local extra = {state = state, configuration = ref}
    if waiting then extra.continuation = '/continuations/' .. waiting end
    return refused(e, 'transition_not_allowed', extra)
  end
  spec = cjson.decode(spec)
  if spec.key and not requirement_met(spec) then
    return refused(e, 'requirement_not_met', {state = state, configuration = ref})
  end
  leave(e.id, 'the instance left the state by event ' .. e.event)
  move(e.id, ref, state, spec.to,
    '{"from":' .. cjson.encode(state) .. ',"to":' .. cjson.encode(spec.to) .. ',' .. string.sub(e.history, 2),
    tonumber(ARGV[4]))
  if spec.approval then suspend(e.id, ref, spec.to, spec.approval, e.cid) end
  return {event_id = e.event_id, outcome = 'ok', instance = e.id, event = e.event,
          from = state, to = spec.to, at = ARGV[2], configuration = ref}
end

local replies = {}
for i, e in ipairs(cjson.decode(ARGV[5])) do
  local key = P .. ':outcome:' .. e.id .. ':' .. e.event_id
  local prior = redis.call('GET', key)
  if prior then
    replies[i] = {prior, 1}
  else
    local outcome = apply(e)
    local text = cjson.encode(outcome)
    -- the dead letter before the outcome: a failed XADD leaves no outcome that would make a retry a duplicate;
    -- e.dead holds at most 64 fields (stream_entry.MAX_FIELDS): 128 values, well within unpack's limit
    if e.entry and outcome.outcome ~= 'ok' then
      redis.call('XADD', ARGV[8], 'MAXLEN', '~', 100000, '*',
        'error', outcome.outcome, 'entry', e.entry, 'instance', e.id, unpack(e.dead, 1, math.min(#e.dead, 128)))
    end
    redis.call('SET', key, text, 'PX', ARGV[3])
    replies[i] = {text, 0}
  end
  if e.entry then redis.call('XACK', ARGV[6], ARGV[7], e.entry) end
end
return cjson.encode(replies)
"""
)

DEFINE = """
-- KEYS[1] = the configurations hash, KEYS[2] = the configuration's transitions hash
-- ARGV[1] = NAME:VERSION, ARGV[2] = its JSON document, ARGV[3...] = the transitions hash's fields and values
-- returns 1 when stored, 0 when NAME:VERSION existed (nothing is written then)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
-- a field at a time: unpack() of thousands of values would overflow Lua's C stack
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

FORGET = (
    _prelude("{now = ARGV[3], now_ms = tonumber(ARGV[4]), retention = tonumber(ARGV[5])}")
    + """
-- KEYS[1] = the instances hash / ARGV[1] = the prefix, ARGV[2] = the instance id, ARGV[3] = now (UTC ISO 8601),
-- ARGV[4] = now (epoch ms), ARGV[5] = retention (ms)
-- removes the instance with its index entries, count, properties, context and history (kept outcomes
-- expire by themselves) and ends its continuation; returns its record "REF STATE", or false when there was none
local id = ARGV[2]
local record = redis.call('HGET', KEYS[1], id)
if not record then return false end
local space = string.find(record, ' ', 1, true)
local ref, state = string.sub(record, 1, space - 1), string.sub(record, space + 1)
leave(id, 'the instance was deleted')
redis.call('HDEL', KEYS[1], id)
redis.call('SREM', P .. ':in:' .. ref .. ':' .. state, id)
redis.call('HINCRBY', P .. ':counts:' .. ref, state, -1)
local properties = redis.call('HGET', P .. ':properties', id)
if properties then
  for name, value in pairs(cjson.decode(properties)) do
    redis.call('SREM', P .. ':with:' .. ref .. ':' .. name .. ':' .. value, id)
  end
  redis.call('HDEL', P .. ':properties', id)
end
redis.call('HDEL', P .. ':context', id)
redis.call('DEL', P .. ':history:' .. id)
redis.call('PUBLISH', P .. ':changes', id .. ' ' .. state .. ' -')
return record
"""
)
