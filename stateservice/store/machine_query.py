"""Instances of a configuration by state and properties, a page at a time, from the index sets.

No request ever reads all instances: a query SSCANs one candidate set, the smallest of those its
conditions name (`in:REF:STATE`, each `with:REF:PROP:VALUE`; without a state, the configuration's
`in:` sets one state after another), and checks each scanned id against the other conditions
(SMISMEMBER on the other property sets, the instance record for the state). A page costs
O(scanned + matches) and a bounded number of round trips; the opaque cursor carries which
candidate was picked on the first page, which state a walk is in and the SSCAN cursor.

A page may end inside one SSCAN reply. Its ids are served sorted, and the cursor then keeps the last
id served and the reply's next SSCAN cursor: the next page asks for the same reply again and serves
its ids above that one. Resuming by id, not by position, matters because the reply asked for again
can differ: the ids already served may have left the set (the usual worker loop: list a page, move
each listed instance away), so a position would skip ids never served. And a reply asked for again
may cover more or fewer of the set's buckets than the first (SSCAN reads buckets until it has COUNT
ids), so the walk goes on from the earlier of the two replies' next cursors: ids of extra buckets
at or below the last served are then read again there (listed twice, never skipped).

SSCAN's promise holds: an instance present in its set for the whole walk is listed at least once,
whatever other instances do meanwhile. One that moves while the walk goes on may be listed twice or
not at all, as with SCAN itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from stateservice.core.machines import INSTANCE_ID, Configuration
from stateservice.errors import BadRequest
from stateservice.store import keys

# CHOICE.STATE.SCAN, or inside a reply CHOICE.STATE.SCAN.FOLLOWING~LAST (the reply's next cursor, the last id served)
CURSOR = re.compile(rf"([0-9]{{1,3}})\.([0-9]{{1,4}})\.([0-9]{{1,20}})(?:\.([0-9]{{1,20}})~({INSTANCE_ID.pattern}))?")
WALK = -1  # the candidate that is no set: every state's set, in the configuration's order
MAX_SCANNED = 10_000  # ids one page scans at most: a sparse match answers a short page and a cursor, not a stall


@dataclass(frozen=True, slots=True)
class Page:
    """One page: `items` ({id, state, properties}) and the next page's cursor (None: the scan is done)."""

    items: list[dict[str, Any]]
    cursor: str | None


@dataclass(slots=True)
class _Position:
    choice: int  # index into the candidates
    state: int  # a walk's state index
    scan: int  # the SSCAN cursor of the reply being served
    following: int = 0  # a page ended inside that reply: the reply's next SSCAN cursor
    last: str | None = None  # and the last id it served (ids are served sorted)

    def text(self) -> str:
        where = f"{self.choice}.{self.state}.{self.scan}"
        return where if self.last is None else f"{where}.{self.following}~{self.last}"


class _Query:
    def __init__(
        self, redis: Redis, configuration: Configuration, state: str | None, properties: Mapping[str, str]
    ) -> None:
        self.redis = redis
        self.configuration = configuration
        self.state = state
        ref = configuration.ref
        self.with_sets = [keys.instances_with(ref, k, v) for k, v in sorted(properties.items())]
        # candidate 0 is the state's set, or the walk over every state; then each property's set
        self.candidates: list[str | int] = [keys.instances_in(ref, state) if state else WALK, *self.with_sets]

    async def pick(self) -> int | None:
        """The smallest candidate's index (None: one is empty, so nothing matches). One round trip, O(states)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for candidate in self.candidates:
                if candidate == WALK:
                    pipe.hvals(keys.instance_counts(self.configuration.ref))
                else:
                    pipe.scard(str(candidate))
            replies = await pipe.execute()
        sizes = [sum(int(v) for v in r) if isinstance(r, list) else int(r) for r in replies]
        if min(sizes) == 0:
            return None
        return sizes.index(min(sizes))

    def scanned_key(self, at: _Position) -> str | None:
        candidate = self.candidates[at.choice]
        if candidate != WALK:
            return str(candidate)
        states = self.configuration.states
        return keys.instances_in(self.configuration.ref, states[at.state]) if at.state < len(states) else None

    async def matches(self, ids: Sequence[str], chosen: int) -> list[dict[str, Any]]:
        """Those of `ids` meeting every condition, as items, in `ids`' order. One round trip."""
        others = [s for i, s in enumerate(self.with_sets, start=1) if i != chosen]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in others:
                pipe.smismember(key, list(ids))
            pipe.hmget(keys.instances(), list(ids))
            pipe.hmget(keys.instance_properties(), list(ids))
            *member, records, properties = await pipe.execute()
        found = []
        for i, instance in enumerate(ids):
            record = records[i]
            if record is None or not all(m[i] for m in member):
                continue  # gone since the scan, or another property differs
            ref, _, state = str(record).partition(" ")
            if ref != self.configuration.ref or (self.state is not None and state != self.state):
                continue
            props = properties[i]
            found.append({"id": instance, "state": state, "properties": orjson.loads(props) if props else {}})
        return found


def _position(cursor: str, query: _Query) -> _Position | None:
    """Where `cursor` resumes; None for one past the end (the empty last page). Raises BadRequest."""
    match = CURSOR.fullmatch(cursor)
    if match is None:
        raise BadRequest(f"cursor={cursor[:40]!r} is not a cursor this service gave", parameter="cursor")
    choice, state, scan, following, last = match.groups()
    at = _Position(int(choice), int(state), int(scan), int(following or 0), last)
    if at.choice >= len(query.candidates) or at.state >= len(query.configuration.states):
        return None
    return at


async def find(
    redis: Redis,
    configuration: Configuration,
    state: str | None,
    properties: Mapping[str, str],
    limit: int,
    cursor: str | None = None,
    budget: int = MAX_SCANNED,
) -> Page:
    """A page of at most `limit` instances of `configuration` in `state` (any, when None) having `properties`.

    At most about `budget` ids are scanned: a sparse match answers a short page with a cursor.
    Raises BadRequest for a malformed cursor; one past the end of this query answers the empty last page.
    """
    query = _Query(redis, configuration, state, properties)
    if cursor is not None:
        resumed = _position(cursor, query)
        if resumed is None:
            return Page([], None)
        at = resumed
    else:
        chosen = await query.pick()
        if chosen is None:
            return Page([], None)
        at = _Position(chosen, 0, 0)
    items: list[dict[str, Any]] = []
    scanned = 0
    while len(items) < limit and scanned < budget:
        key = query.scanned_key(at)
        if key is None:
            return Page(items, None)  # a walk past the last state
        reply, ids = await redis.sscan(key, at.scan, count=max(limit, 10))
        fresh, following = sorted(str(i) for i in ids), int(reply)
        if at.last is not None:  # the reply a page ended inside, asked for again: serve what it did not
            fresh = [i for i in fresh if i > at.last]
            following, at.last = _earlier(following, at.following), None
        scanned += len(fresh)
        found = await query.matches(fresh, at.choice) if fresh else []
        room = limit - len(items)
        if len(found) > room:
            at.following, at.last = following, found[room - 1]["id"]
            items += found[:room]
            return Page(items, at.text())
        items += found
        if following != 0:
            at.scan = following
        elif query.candidates[at.choice] == WALK:
            at.state, at.scan = at.state + 1, 0
        else:
            return Page(items, None)
    if query.scanned_key(at) is None:
        return Page(items, None)
    return Page(items, at.text())


def _earlier(a: int, b: int) -> int:
    """Of two SSCAN cursors, the one a walk reaches first (0: the end). SSCAN walks buckets in reverse-binary
    order, so a cursor's progress is its bits reversed, whatever the table's size."""
    if a == 0 or b == 0:
        return a or b
    return min(a, b, key=lambda c: int(f"{c:064b}"[::-1], 2))
