"""What the dashboard reads of many charts at once, and of one chart's current visit. Reads only.

The overview needs more than `ChartStore.current_states` gives (every counter, the slots held
and the failures of the current state), for a page of up to a few hundred charts at once: one
Lua script a BATCH of charts returns all of it as one JSON reply (see `store/bulk.py` for why a
script and not a pipeline of HGETALLs). Every key arrives through KEYS; on Redis Cluster,
whose scripts stay within one slot, it reads one chart at a time.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from stateservice.core import rules, slots
from stateservice.core.chart import Chart, Snapshot
from stateservice.core.slots import Slot
from stateservice.store import codec, keys
from stateservice.store.charts import BATCH
from stateservice.store.redis.cluster import ClusterRedis

READ_ROLLOUTS = """
-- KEYS[3i-2] = stateservice:{CHART}, KEYS[3i-1] = its slots:STATE, KEYS[3i] = its failed:STATE (STATE: the current)
-- returns JSON: for each chart, [the state hash as a flat list of fields and values, the slots' values, failures]
local out = {}
for i = 1, #KEYS, 3 do
  out[#out + 1] = {redis.call('HGETALL', KEYS[i]), redis.call('HVALS', KEYS[i + 1]), redis.call('HLEN', KEYS[i + 2])}
end
return cjson.encode(out)
"""


@dataclass(frozen=True, slots=True)
class Rollout:
    """A chart's counters (every counting state's), and its current state's slots held (within their ttl) and
    failures."""

    counters: dict[str, int]
    held: int
    failures: int


@dataclass(frozen=True, slots=True)
class Visit:
    """The current visit of a state: failures [{host, at, reason}], expired slots [{host, at}], slots held (within
    their ttl)."""

    failures: list[dict[str, Any]]
    expired: list[dict[str, str]]
    slots: list[Slot]


async def rollouts(redis: Redis, charts: Sequence[tuple[Chart, Snapshot]], now: datetime) -> list[Rollout]:
    """Each chart's Rollout, read in its current state (as its snapshot says) at `now`: one round trip a BATCH."""
    found: list[Rollout] = []
    for start in range(0, len(charts), BATCH):
        chunk = charts[start : start + BATCH]
        if isinstance(redis, ClusterRedis):
            replies = [await _read(redis, [pair], now) for pair in chunk]
            found += [reply[0] for reply in replies]
        else:
            found += await _read(redis, chunk, now)
    return found


def _holding(values: Any, now: datetime) -> int:
    """How many of a `slots:STATE` hash's values are within their ttl at `now`. One past it is not held, though it
    stays in the hash until the next slot operation frees it (as GET /charts/{chart}/slots says); one that cannot
    be read counts as held (the chart page names it)."""
    held = 0
    for raw in values if isinstance(values, list) else ():  # cjson: an empty table (no slots) is {}
        try:
            held += codec.read_timestamp(orjson.loads(raw)["expires_at"]) > now
        except (ValueError, KeyError, TypeError, AttributeError):
            held += 1
    return held


async def _read(redis: Redis, charts: Sequence[tuple[Chart, Snapshot]], now: datetime) -> list[Rollout]:
    if not charts:
        return []
    named = [
        key
        for chart, snap in charts
        for key in (
            keys.chart_state(chart.name),
            keys.chart_slots(chart.name, snap.state),
            keys.chart_failed(chart.name, snap.state),
        )
    ]
    replies = orjson.loads(await redis.eval(READ_ROLLOUTS, len(named), *named))
    found = []
    for (chart, _), (flat, holders, failures) in zip(charts, replies, strict=True):
        items = flat if isinstance(flat, list) else []  # cjson: an empty table (a missing hash) is {}
        fields = dict(zip(items[::2], items[1::2], strict=True))
        counters = {
            s.name: codec.read_counter(chart, fields, s.name, rules.start_count(s)) for s in chart.states if s.counter
        }
        found.append(Rollout(counters, _holding(holders, now), int(failures)))
    return found


async def visit(redis: Redis, chart: Chart, state: str, now: datetime) -> Visit:
    """The current visit of `state` at `now`: its failures, expired slots and slots held (one round trip, no writes:
    a slot past its expiry is shown as expired, at its expiry, as the next slot operation will record it)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.chart_failed(chart.name, state))
        pipe.hgetall(keys.chart_expired(chart.name, state))
        pipe.hgetall(keys.chart_slots(chart.name, state))
        failed, expired, held = await pipe.execute()
    alive, gone = slots.expire(codec.decode_slots(chart.name, state, held), now)
    expired |= {slot.host: codec.timestamp(slot.expires_at) for slot in gone}
    return Visit(
        codec.decode_failures(failed),
        [{"host": host, "at": at} for host, at in sorted(expired.items())],
        sorted(alive.values(), key=lambda s: (s.granted_at, s.host)),
    )


async def secret(redis: Redis) -> bytes:
    """The dashboard's signing key: made by the first worker to ask (SET NX), then read by every other. One round trip
    while it exists (each dashboard request reads it, so `DEL` signs everybody out at once)."""
    value = await redis.get(keys.dashboard_secret())
    if value is None:
        await redis.set(keys.dashboard_secret(), secrets.token_hex(32), nx=True)
        value = await redis.get(keys.dashboard_secret())
    return str(value).encode()
