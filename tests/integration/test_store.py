"""ChartStore against a real redis-server: exact counts under concurrency, reset, registration."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.core.parse import parse
from stateservice.errors import NotCurrent
from stateservice.store import keys
from stateservice.store.charts import ChartStore
from stateservice.store.redis.connect import connect
from tests.support import charts
from tests.support.charts import load

StoreFactory = Callable[[], ChartStore]


def chain(name: str, targets: list[int]) -> Chart:
    """A linear chart s0 -> s1 -> ... whose state i moves on after targets[i] reports; the last state is final."""
    lines = [f"name: {name}", "current_state: s0", "states:"]
    for i, target in enumerate(targets):
        lines += [
            f"  - name: s{i}",
            "    func: increment",
            "    current: {key: count, value: 0}",
            f"    target: {{name: s{i + 1}, when: {{key: count, value: {target}}}}}",
        ]
    lines.append(f"  - name: s{len(targets)}")
    return parse("\n".join(lines) + "\n", f"{name}.yaml").unwrap()


@pytest.fixture
def stores(clients: Callable[[], Redis]) -> StoreFactory:
    """`make()`: a ChartStore with its own client, as a separate worker process would have."""
    return lambda: ChartStore(clients())


async def test_concurrent_reports_from_two_workers_count_exactly(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("hot", [1000, 1])
    workers = [stores(), stores()]
    await workers[0].register(chart)
    await workers[1].register(chart)

    results = await asyncio.gather(*(workers[i % 2].report(chart, "s0") for i in range(500)))

    assert all(r.counted for r in results)
    assert all(r.transition is None for r in results)
    assert sorted(r.count for r in results) == list(range(1, 501))  # every count seen exactly once
    assert await plain.hget(keys.chart_state("hot"), "counter:s0") == "500"
    assert await plain.hget(keys.chart_state("hot"), "current_state") == "s0"
    assert await plain.xlen(keys.chart_history("hot")) == 0


async def test_concurrent_reports_cross_each_threshold_once(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("chain", [100, 100, 100, 100])
    workers = [stores(), stores()]
    for worker in workers:
        await worker.register(chart)

    async def reporter(i: int) -> str:
        store = workers[i % 2]
        state = (await store.current_state(chart)).state
        while True:
            try:
                await store.report(chart, state)
                return state
            except NotCurrent as exc:  # the chart moved between our read and our report: report what is current
                state = exc.fields["current_state"]

    reported = await asyncio.gather(*(reporter(i) for i in range(350)))

    assert {s: reported.count(s) for s in set(reported)} == {"s0": 100, "s1": 100, "s2": 100, "s3": 50}
    state = await plain.hgetall(keys.chart_state("chain"))
    assert state["current_state"] == "s3"
    assert state["counter:s3"] == "50"
    history = await plain.xrange(keys.chart_history("chain"))
    assert [(f["from"], f["to"], f["cause"]) for _, f in history] == [
        ("s0", "s1", "put"),
        ("s1", "s2", "put"),
        ("s2", "s3", "put"),
    ]
    assert [state[f"counter:s{i}"] for i in range(3)] == ["100", "100", "100"]  # each threshold reached once


async def test_concurrent_hosts_count_once_each(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("hosts", [1000, 1])
    workers = [stores(), stores()]
    for worker in workers:
        await worker.register(chart)
    calls = [(f"web-{h:02d}", n) for h in range(50) for n in range(5)]
    random.Random(7).shuffle(calls)

    results = await asyncio.gather(
        *(workers[i % 2].report(chart, "s0", host=host) for i, (host, _) in enumerate(calls))
    )

    assert sum(r.counted for r in results) == 50
    assert await plain.hget(keys.chart_state("hosts"), "counter:s0") == "50"
    assert await plain.smembers(keys.chart_hosts("hosts", "s0")) == {f"web-{h:02d}" for h in range(50)}


async def test_reset(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("release", [2, 5])
    store = stores()
    await store.register(chart)
    await store.report(chart, "s0", host="web-1")
    await store.report(chart, "s0", host="web-2")
    await store.report(chart, "s1", host="web-3")
    assert await plain.exists(keys.chart_hosts("release", "s1")) == 1

    move = await store.reset(chart, host="ops")

    assert (move.from_state, move.to_state, move.cause) == ("s1", "s0", "reset")
    state = await plain.hgetall(keys.chart_state("release"))
    assert state["current_state"] == "s0"
    assert state["counter:s0"] == "0"
    assert state["counter:s1"] == "0"
    assert await plain.keys("stateservice:{release}:hosts:*") == []
    newest = (await store.history(chart, 1))[0]
    assert (newest["from"], newest["to"], newest["cause"], newest["host"]) == ("s1", "s0", "reset", "ops")
    assert (await store.report(chart, "s0", host="web-1")).counted


async def test_reset_of_a_chart_never_stored(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("fresh", [2])
    move = await stores().reset(chart)
    assert (move.from_state, move.to_state, move.cause) == ("", "s0", "reset")
    assert await plain.hget(keys.chart_state("fresh"), "current_state") == "s0"
    assert await plain.sismember(keys.charts_index(), "fresh")


async def test_register_is_idempotent_and_records_the_definition(stores: StoreFactory, plain: Redis) -> None:
    chart = chain("release", [3])
    first, second = stores(), stores()
    snap = await first.register(chart)
    await first.report(chart, "s0")
    again = await second.register(chart)
    assert (again.state, again.count, again.entered_at) == (snap.state, 1, snap.entered_at)
    assert await first.register(chart) == again

    definition = await plain.hgetall(keys.chart_definition("release"))
    assert definition["path"] == "release.yaml"
    assert definition["digest"] == chart.digest
    assert len(chart.digest) == 64
    assert definition["source"] == chart.source
    assert definition["registered_at"].endswith("Z")
    assert await plain.smembers(keys.charts_index()) == {"release"}
    assert await plain.type(keys.chart_definition("release")) == "hash"
    assert await plain.xlen(keys.chart_history("release")) == 0


async def test_register_two_charts(stores: StoreFactory, plain: Redis) -> None:
    store = stores()
    await store.register(chain("a", [1]))
    await store.register(chain("b", [1]))
    assert await plain.smembers(keys.charts_index()) == {"a", "b"}
    assert await store.registered() == ["a", "b"]


async def test_a_host_counts_again_in_a_later_visit_of_a_state(stores: StoreFactory, plain: Redis) -> None:
    chart = load(charts.CYCLE, "charts/release.yaml")
    store = stores()
    await store.register(chart)
    await store.report(chart, "canary", host="web-1")
    await store.report(chart, "canary", host="web-2")  # -> fleet
    await store.report(chart, "fleet", host="web-3")  # -> canary again: a new visit
    left_over = await plain.smembers(keys.chart_hosts("cycle", "canary"))
    again = await store.report(chart, "canary", host="web-1")
    assert (left_over, again.counted, again.count) == (set(), True, 1)


async def _connections(plain: Redis) -> int:
    return len(await plain.client_list())


async def test_closing_a_connected_client_closes_its_connections(redis_url: str, plain: Redis) -> None:
    client = connect(redis_url)
    await client.ping()
    assert await _connections(plain) == 2
    await client.aclose()
    try:
        for _ in range(50):  # the server notices a closed socket within a moment
            if await _connections(plain) == 1:
                break
            await asyncio.sleep(0.02)
        left_open = await _connections(plain) - 1
    finally:
        await client.connection_pool.aclose()
    assert left_open == 0, "Redis.aclose() on a client from connect() leaves its pool's connections open"
