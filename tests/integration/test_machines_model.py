"""The Redis store against the pure reference model (core/book.py): the same operations, the same answers.

Hypothesis draws sequences of creations, events (by id or by properties, with event ids drawn from a
small pool so that duplicates are common) and chart state changes; each runs against a real
redis-server through store/machines.py and against `Book`. Every outcome, every instance's state and
the counts per state must agree, and the counts must equal a recount of the index sets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from stateservice.core.book import Book
from stateservice.core.machines import Configuration, configuration_from
from stateservice.errors import InstanceExists
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Event, Machines

LIFE = configuration_from(
    {
        "name": "life",
        "version": "v1",
        "states": ["drain", "drained", "upgraded", "back"],
        "starting_state": "drain",
        "transitions": [
            {"from": "drain", "to": "drained", "event": "done"},
            {"from": "drained", "to": "upgraded", "event": "go", "requires": {"chart": "fleet", "state": "open"}},
            {"from": "upgraded", "to": "back", "event": "done"},
            {"from": "back", "to": "drain", "event": "again"},
            {
                "from": "drain",
                "to": "back",
                "event": "skip",
                "requires": {"configuration": "life:v1", "properties": {"host": "h0"}, "state": "back"},
            },
        ],
    }
)

IDS = st.sampled_from(["a", "b", "c"])
PROPS = st.sampled_from([{"host": "h0"}, {"host": "h1"}, {"host": "h0", "rack": "r1"}])
EVENTS = st.sampled_from(["done", "go", "again", "skip", "nope"])
EVENT_IDS = st.sampled_from([f"e{n}" for n in range(6)])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), IDS),
        st.tuples(st.just("create_by"), PROPS),
        st.tuples(st.just("event"), IDS, EVENTS, EVENT_IDS),
        st.tuples(st.just("event_by"), PROPS, EVENTS, EVENT_IDS),
        st.tuples(st.just("chart"), st.sampled_from(["open", "closed"])),
    ),
    max_size=40,
)


async def run(url: str, operations: list[tuple[Any, ...]]) -> None:
    client = Redis.from_url(url, decode_responses=True)
    store = Machines(client, local_clock())
    book = Book({LIFE.ref: LIFE})
    charts: dict[str, str] = {}
    try:
        await store.define(LIFE)
        for op in operations:
            await step(store, book, charts, op)
        await agree(store, book, LIFE)
    finally:
        await store.close()
        await client.aclose()


async def step(store: Machines, book: Book, charts: dict[str, str], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "chart":
        charts["fleet"] = op[1]
        await store.redis.hset(keys.chart_state("fleet"), keys.CURRENT_STATE, op[1])
    elif kind in ("create", "create_by"):
        ident, props = (op[1], None) if kind == "create" else (None, op[1])
        expected: Any
        try:
            expected = book.create(LIFE.ref, ident, props)
        except InstanceExists:
            expected = InstanceExists
        try:
            got: Any = await store.create(LIFE.ref, ident, props)
        except InstanceExists:
            got = InstanceExists
        assert got == expected, op
    else:
        target: Any = op[1] if kind == "event" else (LIFE.ref, op[1])
        want = book.apply(target, op[2], op[3], charts)
        event = (
            Event(op[2], op[3], instance=op[1])
            if kind == "event"
            else Event(op[2], op[3], ref=LIFE.ref, properties=op[1])
        )
        got_outcome = await store.apply(event)
        body = got_outcome.body
        assert (body["outcome"], got_outcome.duplicate) == (want.outcome.value, want.duplicate), op
        if want.outcome.value == "ok":
            assert (body["from"], body["to"]) == (want.source, want.target), op


async def agree(store: Machines, book: Book, configuration: Configuration) -> None:
    for instance in book.instances(configuration.ref):
        assert await store.state(instance.id) == (configuration.ref, instance.state)
    counts = await store.counts(configuration)
    assert counts == book.counts(configuration.ref)
    for state, n in counts.items():
        assert await store.redis.scard(keys.instances_in(configuration.ref, state)) == n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_the_store_answers_as_the_reference_model(redis_url: str, operations: list[tuple[Any, ...]]) -> None:
    with redis.Redis.from_url(redis_url) as plain:
        plain.flushall()
    asyncio.run(run(redis_url, operations))
