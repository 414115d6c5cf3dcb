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

import orjson
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.store import keys

READ_STATES = """
-- KEYS[i] = stateservice:{CHART} of each chart / ARGV[1] = the current state field, ARGV[2] = the entered_at field
-- returns JSON: for each key, [current_state, entered_at], false for a field (or hash) that is missing
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, ARGV[1], ARGV[2])
  out[i] = {fields[1], fields[2]}
end
return cjson.encode(out)
"""


async def read_states(redis: Redis, charts: Sequence[Chart]) -> list[tuple[str | None, str | None]]:
    """Each chart's stored (current_state, entered_at), None where missing: one round trip for all of them."""
    if not charts:
        return []  # cjson encodes an empty table as {}
    reply = await redis.eval(
        READ_STATES, len(charts), *(keys.chart_state(c.name) for c in charts), keys.CURRENT_STATE, keys.ENTERED_AT
    )
    return [(_field(state), _field(entered)) for state, entered in orjson.loads(reply)]


def _field(value: str | bool) -> str | None:
    return None if value is False else str(value)
