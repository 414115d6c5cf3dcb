"""A transaction that another process's write invalidated is retried with the reports that arrived meanwhile.

Against a real redis-server, through ChartStore. The "other process" is a second ChartStore
on its own client whose report commits between this store's WATCH and its EXEC (injected
just before EXEC), so this store's first attempt fails with a WatchError every time, not by
chance; reports that reach this store while that happens join the retry (one transaction,
not two) and are still answered exactly as if every report had been serialised. Also: the
WATCH and the reads go to Redis in one write, and neither an error reply nor a cancellation
in the middle of it may leave a reply unread on a pooled connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from stateservice.core import rules
from stateservice.core.chart import Chart
from stateservice.errors import NotCurrent
from stateservice.store import keys
from stateservice.store.charts import MAX_PAUSE, ChartStore
from stateservice.store.clock import local_clock
from stateservice.store.group import GroupCommit
from stateservice.store.redis.connect import connect
from tests.support.charts import FOREVER, wave

Hook = Callable[[], Awaitable[None]]


class HookedPipeline(Pipeline):
    """Runs the next queued hook just before a transaction's EXEC is sent."""

    hooks: list[Hook]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.explicit_transaction and self.hooks:
            await self.hooks.pop(0)()
        return await super().execute(raise_on_error)


class RoutedPipeline(HookedPipeline):
    """A pipeline with a WATCH of its own (as Redis Cluster's has): the store falls back to redis-py's WATCH."""

    async def watch(self, *names: Any) -> Any:  # type: ignore[override]
        return await super().watch(*names)


class HookedRedis(Redis):
    pipeline_class: type[HookedPipeline] = HookedPipeline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks: list[Hook] = []

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = self.pipeline_class(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.hooks = self.hooks
        return pipe


@pytest.fixture(params=[HookedPipeline, RoutedPipeline], ids=["one-round-trip", "routed-watch"])
async def hooked(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[HookedRedis]:
    client = HookedRedis.from_url(redis_url, decode_responses=True)
    assert isinstance(client, HookedRedis)
    client.pipeline_class = request.param
    yield client
    await client.aclose()


@pytest.fixture
async def other(redis_url: str) -> AsyncIterator[Redis]:
    """The other worker's client."""
    client = connect(redis_url)
    yield client
    await client.aclose()


def interference(
    store: ChartStore, other: ChartStore, chart: Chart, foreign: str, late: list[str]
) -> tuple[Hook, list[asyncio.Task[rules.Report]]]:
    """A hook: `other` counts `foreign` (so the EXEC about to be sent fails) and `late` reports reach `store`."""
    tasks: list[asyncio.Task[rules.Report]] = []

    async def hook() -> None:
        await other.report(chart, "canary", foreign)
        tasks.extend(asyncio.create_task(store.report(chart, "canary", host)) for host in late)
        await asyncio.sleep(0)  # they reach the group commit's queue while the batch is in flight

    return hook, tasks


async def outcomes(tasks: list[asyncio.Task[rules.Report]]) -> list[rules.Report | BaseException]:
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_a_retry_takes_in_the_reports_that_arrived_meanwhile(hooked: HookedRedis, other: Redis) -> None:
    chart = wave(FOREVER)
    store, theirs = ChartStore(hooked), ChartStore(other)
    await store.register(chart)
    commits, retries = store.commits, store.retries
    late = [f"late{i}" for i in range(5)]
    hook, late_tasks = interference(store, theirs, chart, "theirs", late)
    hooked.hooks.append(hook)

    first = [asyncio.create_task(store.report(chart, "canary", f"h{i}")) for i in range(5)]
    answers = await outcomes(first)
    late_answers = await outcomes(late_tasks)

    assert (store.commits - commits, store.retries - retries) == (1, 1), "one retry, and the late reports shared it"
    assert 0 < store._pause("wave") <= MAX_PAUSE  # written by others lately: the next batch waits a little
    assert theirs._pause("wave") == 0  # it never lost a transaction
    assert all(isinstance(a, rules.Report) and a.counted for a in [*answers, *late_answers])
    # the other worker's report committed first; then this batch, in arrival order, the late ones last
    assert [a.count for a in [*answers, *late_answers] if isinstance(a, rules.Report)] == list(range(2, 12))
    fields = await other.hgetall(keys.chart_state("wave"))
    assert fields[keys.counter_field("canary")] == "11"
    hosts = await other.smembers(keys.chart_hosts("wave", "canary"))
    assert hosts == {"theirs", *(f"h{i}" for i in range(5)), *late}


async def test_a_merged_retry_crosses_the_threshold_exactly_once(hooked: HookedRedis, other: Redis) -> None:
    chart = wave(8)
    store, theirs = ChartStore(hooked), ChartStore(other)
    await store.register(chart)
    # late: a host of this batch and the other worker's host again (counted already), then three new ones
    late = ["h0", "theirs", "l2", "l3", "l4", "l5"]
    hook, late_tasks = interference(store, theirs, chart, "theirs", late)
    hooked.hooks.append(hook)

    first = [asyncio.create_task(store.report(chart, "canary", f"h{i}")) for i in range(5)]
    answers = await outcomes(first)
    late_answers = await outcomes(late_tasks)

    assert [(a.counted, a.count, a.snapshot.state) for a in answers if isinstance(a, rules.Report)] == [
        (True, n, "canary") for n in range(2, 7)
    ]
    h0, again, l2, l3, l4, l5 = late_answers
    assert isinstance(h0, rules.Report) and not h0.counted and h0.count == 6
    assert isinstance(again, rules.Report) and not again.counted and again.count == 6
    assert isinstance(l2, rules.Report) and l2.counted and l2.count == 7 and l2.transition is None
    assert isinstance(l3, rules.Report) and l3.counted and l3.transition is not None  # the 8th: it moves the chart
    assert (l3.transition.host, l3.transition.to_state, l3.snapshot.state) == ("l3", "fleet", "fleet")
    assert all(isinstance(a, NotCurrent) for a in (l4, l5)), (l4, l5)
    history: list[tuple[str, dict[str, str]]] = await other.xrange(keys.chart_history("wave"))  # type: ignore[assignment]
    assert [(f["from"], f["to"], f["host"]) for _, f in history] == [("canary", "fleet", "l3")]
    fields = await other.hgetall(keys.chart_state("wave"))
    assert (fields[keys.CURRENT_STATE], fields[keys.counter_field("canary")]) == ("fleet", "8")
    assert await other.scard(keys.chart_hosts("wave", "fleet")) == 0  # a new visit: nobody counted in it yet


async def test_an_error_reply_in_the_watched_read_leaves_the_connection_in_step(redis_url: str, other: Redis) -> None:
    client = connect(redis_url, max_connections=1)  # every command below shares one connection
    try:
        chart = wave(FOREVER)
        store = ChartStore(client, clock=local_clock())  # TIME would need a second connection
        await store.register(chart)
        state = keys.chart_state("wave")
        await other.delete(state)
        await other.set(state, "not a hash")  # an operator's mistake: HGETALL answers WRONGTYPE, SMISMEMBER after it

        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await store.report(chart, "canary", "h1")
        await other.delete(state)  # the repair: the next report starts the chart afresh

        assert (await store.report(chart, "canary", "h1")).count == 1
        assert (await store.report(chart, "canary")).count == 2
        await client.set("probe", "after")
        assert await client.get("probe") == "after"
    finally:
        await client.aclose()


async def test_a_cancelled_report_leaves_no_reply_unread(redis_url: str, other: Redis) -> None:
    client = connect(redis_url, max_connections=1)
    try:
        chart = wave(FOREVER)
        # without coalescing the transaction runs in the caller's task: cancelling it can stop it anywhere
        store = ChartStore(client, clock=local_clock(), coalesce=False)
        await store.register(chart)
        for n in range(16):
            task = asyncio.create_task(store.report(chart, "canary", f"c{n}"))
            for _ in range(n):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

            await client.set("probe", str(n))
            assert await client.get("probe") == str(n)
            report = await store.report(chart, "canary", f"after{n}")
            fields = await other.hgetall(keys.chart_state("wave"))
            counted = await other.scard(keys.chart_hosts("wave", "canary"))
            assert report.count == int(fields[keys.counter_field("canary")]) == counted
    finally:
        await client.aclose()


async def test_group_commit_answers_the_items_more_added_in_order() -> None:
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def commit(items: list[int], more: Callable[[], list[int]]) -> list[int]:
        await release.wait()
        items = items + more()
        calls.append(items)
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=4)
    first = group.submit(1)
    await asyncio.sleep(0)  # the batch [1] is in flight
    rest = [group.submit(n) for n in range(2, 8)]
    await asyncio.sleep(0)
    release.set()

    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(1, 8)]
    assert calls == [[1, 2, 3, 4], [5, 6, 7]]  # up to max_batch joined the batch in flight; the rest came next


async def test_group_commit_waits_the_pause_before_the_next_batch_and_items_keep_joining() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def commit(items: list[int], more: Callable[[], list[int]]) -> list[int]:
        await release.wait()
        batches.append(items)
        return items

    group: GroupCommit[int, int] = GroupCommit(commit, pause=lambda: 0.2)
    first = group.submit(1)
    await asyncio.sleep(0)
    second = group.submit(2)  # queued behind the batch in flight
    await asyncio.sleep(0)
    release.set()
    assert await first == 1
    third = group.submit(3)  # arrives during the pause: it joins 2's batch

    assert list(await asyncio.gather(second, third)) == [2, 3]
    assert batches == [[1], [2, 3]]
