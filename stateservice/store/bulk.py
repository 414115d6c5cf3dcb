"""Many charts a round trip: Lua scripts that read or write the keys of hundreds of charts in one command.

Why Lua, when WATCH/MULTI does every chart's job: with 10,000 charts, the cost is no longer
Redis' but redis-py's, which packs each command and parses each reply in pure Python (about
30 µs a reply here). A pipeline of 500 HMGETs is 500 replies (1,500 values) to parse; the
same reads as one script returning one JSON text is one reply. So these scripts only carry:
every decision stays in Python, every key still arrives through KEYS (a chart's keys share
its slot, but a script of many charts spans slots: not for Redis Cluster, whose callers go
one chart at a time), and writes still run inside the caller's WATCH/MULTI/EXEC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from stateservice.core.chart import Chart, Snapshot
from stateservice.store import codec, keys

Command = tuple[str, tuple[str, ...], tuple[str, ...]]  # a write: its name, the keys it names, its other arguments


READ_FIELDS = """
-- KEYS[i] = a hash / ARGV = the fields to read of each
-- returns JSON: for each hash, its fields' values in ARGV's order, null for one (or a hash) that is missing
local out = {}
for i, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do
    if not values[j] then values[j] = cjson.null end
  end
  out[i] = values
end
return cjson.encode(out)
"""

READ_HASHES = """
-- KEYS[i] = a hash / returns JSON: for each, its fields and values as a flat list
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGETALL', key)
end
return cjson.encode(out)
"""


async def read_fields(redis: Redis, hashes: Sequence[str], fields: Sequence[str]) -> list[list[str | None]]:
    """`fields` of each of `hashes` (None where missing): one round trip for all of them. Not for Redis Cluster."""
    if not hashes:
        return []  # cjson encodes an empty table as {}
    found: list[list[str | None]] = orjson.loads(await redis.eval(READ_FIELDS, len(hashes), *hashes, *fields))
    return found


async def read_hashes(redis: Redis, hashes: Sequence[str]) -> list[dict[str, str]]:
    """Each of `hashes` ({} when missing): one round trip for all of them. Not for Redis Cluster."""
    if not hashes:
        return []
    return [_pairs(flat) for flat in orjson.loads(await redis.eval(READ_HASHES, len(hashes), *hashes))]


async def read_states(redis: Redis, charts: Sequence[Chart]) -> list[list[str | None]]:
    """Each chart's stored [current_state, entered_at], None where missing: one round trip for all of them."""
    return await read_fields(redis, [keys.chart_state(c.name) for c in charts], (keys.CURRENT_STATE, keys.ENTERED_AT))


MEMBERS = """
-- KEYS[1] = a set / returns JSON: its members
return cjson.encode(redis.call('SMEMBERS', KEYS[1]))
"""


async def members(redis: Redis, key: str) -> list[str]:
    """SMEMBERS `key` as one reply (the charts index: 10,000 names, which the leader reads twice a second)."""
    found = orjson.loads(await redis.eval(MEMBERS, 1, key))
    return [] if isinstance(found, dict) else [str(name) for name in found]  # cjson: an empty table is {}


READ_REGISTRATIONS = """
-- KEYS[2i-1] = stateservice:{CHART}, KEYS[2i] = stateservice:{CHART}:definition of each chart
-- ARGV[1] = the digest field of a definition
-- returns JSON: for each chart, [its state hash as a flat list (fields, values), its stored digest or false]
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = {redis.call('HGETALL', KEYS[i]), redis.call('HGET', KEYS[i + 1], ARGV[1])}
end
return cjson.encode(out)
"""

WRITE = """
-- KEYS = every key the writes name, in order
-- ARGV[1] = the writes as JSON, in order: for each, [its command, how many of the next KEYS it names,
--           [its other arguments]] (one argument, not thousands: redis-py encodes each in Python)
local k = 1
for _, write in ipairs(cjson.decode(ARGV[1])) do
  local call = {}
  for i = 0, write[2] - 1 do call[#call + 1] = KEYS[k + i] end
  for _, arg in ipairs(write[3]) do call[#call + 1] = arg end
  redis.call(write[1], unpack(call))
  k = k + write[2]
end
return k - 1
"""


def registrations_read(charts: Sequence[Chart]) -> tuple[str, ...]:
    """The command (for a WATCHing transaction) reading what registering `charts` decides from."""
    names = [key for c in charts for key in (keys.chart_state(c.name), keys.chart_definition(c.name))]
    return ("EVAL", READ_REGISTRATIONS, str(len(names)), *names, keys.DEFINITION_DIGEST)


def decode_registrations(reply: str) -> list[tuple[dict[str, str], str | None]]:
    """`registrations_read`'s reply: each chart's state hash ({} when missing) and stored digest (None when none)."""
    return [(_pairs(flat), None if digest is False else str(digest)) for flat, digest in orjson.loads(reply)]


def write(commands: Sequence[Command]) -> tuple[str, ...]:
    """One command running all of `commands` in order (queue it inside MULTI: they commit with the rest)."""
    names = [key for _, named, _ in commands for key in named]
    writes = orjson.dumps([(name, len(named), rest) for name, named, rest in commands]).decode()
    return ("EVAL", WRITE, str(len(names)), *names, writes)


def create(chart: Chart, snap: Snapshot) -> list[Command]:
    """A fresh state hash at `snap`: every counter at its start, no host counted, no slot held, no failure, anywhere."""
    key = keys.chart_state(chart.name)
    visits = tuple(k for s in chart.states for k in keys.visit_keys(chart.name, s.name))
    return [("DEL", (key, *visits), ()), ("HSET", (key,), _flat(codec.initial_fields(chart, snap)))]


def define(chart: Chart, now: datetime) -> list[Command]:
    """The chart's definition as served from `now`, and its name in the index of charts."""
    definition = ("HSET", (keys.chart_definition(chart.name),), _flat(codec.encode_definition(chart, now)))
    return [definition, ("SADD", (keys.charts_index(),), (chart.name,))]


def _flat(fields: dict[str, str]) -> tuple[str, ...]:
    return tuple(item for pair in fields.items() for item in pair)


def _pairs(flat: list[Any] | dict[str, Any]) -> dict[str, str]:
    if isinstance(flat, dict):  # cjson encodes an empty table (a missing hash) as {}
        return {}
    return dict(zip(flat[::2], flat[1::2], strict=True))
