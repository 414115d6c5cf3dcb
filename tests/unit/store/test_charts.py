"""store/charts.py: ChartStore basics, fast, against fakeredis (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial

import fakeredis
import pytest

from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import NotCurrent, NotReportable, StateRemoved, UnknownState
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from tests.support import charts

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

load = partial(charts.load, path="release.yaml")  # a chart without `name:` is called "release"
RELEASE = charts.RELEASE


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    async def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.flushall()
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis: fakeredis.FakeAsyncRedis, clock: Clock) -> ChartStore:
    return ChartStore(redis, clock=clock)


async def stored(store: ChartStore, chart: Chart) -> Snapshot | None:
    """The snapshot in the chart's state hash, read as an operator would (None when there is none)."""
    return codec.decode_snapshot(chart, await store.redis.hgetall(keys.chart_state(chart.name)))


async def test_register_creates_the_initial_state(
    store: ChartStore, redis: fakeredis.FakeAsyncRedis, chart: Chart
) -> None:
    snap = await store.register(chart)
    assert snap == Snapshot("canary", 0, T0)
    assert await redis.hgetall(keys.chart_state("release")) == {
        "current_state": "canary",
        "entered_at": codec.timestamp(T0),
        "counter:canary": "0",
        "counter:fleet": "5",
    }
    assert await redis.smembers(keys.charts_index()) == {"release"}  # store.registered() runs a script: integration
    definition = await store.definition("release")
    assert definition["digest"] == chart.digest
    assert definition["path"] == "release.yaml"
    assert definition["source"] == chart.source


async def test_snapshot_creates_a_missing_chart(store: ChartStore, chart: Chart) -> None:
    assert await stored(store, chart) is None
    assert await store.current_state(chart) == Snapshot("canary", 0, T0)
    assert await stored(store, chart) == Snapshot("canary", 0, T0)


async def test_report_counts_then_moves(store: ChartStore, clock: Clock, chart: Chart) -> None:
    await store.register(chart)
    first = await store.report(chart, "canary")
    assert first.counted and first.count == 1 and first.transition is None
    assert await stored(store, chart) == Snapshot("canary", 1, T0)
    assert await store.history(chart, 10) == []  # a count that moves nothing is not history

    moved_at = clock.tick(60)
    second = await store.report(chart, "canary", host="web-2")
    assert second.counted and second.count == 2
    assert second.transition == Transition("release", "canary", "fleet", "put", moved_at, "web-2")
    assert await stored(store, chart) == Snapshot("fleet", 5, moved_at)

    history = await store.history(chart, 10)
    assert [(h["from"], h["to"], h["cause"], h["host"], h["at"]) for h in history] == [
        ("canary", "fleet", "put", "web-2", codec.timestamp(moved_at))
    ]


async def test_report_refusals(store: ChartStore, chart: Chart) -> None:
    await store.register(chart)
    with pytest.raises(NotCurrent) as not_current:
        await store.report(chart, "fleet")
    assert not_current.value.fields["current_state"] == "canary"
    with pytest.raises(UnknownState):
        await store.report(chart, "canery")
    await store.report(chart, "canary")
    await store.report(chart, "canary")
    await store.report(chart, "fleet")
    await store.report(chart, "fleet")
    with pytest.raises(NotReportable):
        await store.report(chart, "done")
    assert (await stored(store, chart)).state == "done"


async def test_report_once_per_host(store: ChartStore, redis: fakeredis.FakeAsyncRedis) -> None:
    chart = load(RELEASE.replace("value: 2}}", "value: 10}}"))
    await store.register(chart)
    assert (await store.report(chart, "canary", host="web-1")).counted
    again = await store.report(chart, "canary", host="web-1")
    assert not again.counted and again.count == 1
    assert (await store.report(chart, "canary", host="web-2")).counted
    assert (await stored(store, chart)).count == 2
    assert await redis.smembers(keys.chart_hosts("release", "canary")) == {"web-1", "web-2"}


async def test_history_is_newest_first_and_limited(store: ChartStore, clock: Clock, chart: Chart) -> None:
    await store.register(chart)
    for state in ("canary", "canary", "fleet", "fleet"):
        clock.tick()
        await store.report(chart, state)
    history = await store.history(chart, 10)
    assert [(h["from"], h["to"]) for h in history] == [("fleet", "done"), ("canary", "fleet")]
    assert [(h["from"], h["to"]) for h in await store.history(chart, 1)] == [("fleet", "done")]


async def test_view(store: ChartStore, chart: Chart) -> None:
    await store.register(chart)
    await store.report(chart, "canary", host="web-1")
    view = await store.view(chart)
    assert view.chart is chart
    assert view.snapshot == Snapshot("canary", 1, T0)
    assert view.counters == {"canary": 1, "fleet": 5}
    assert view.hosts == ["web-1"]


async def test_view_creates_a_missing_chart(store: ChartStore, chart: Chart) -> None:
    view = await store.view(chart)
    assert view.snapshot.state == "canary"
    assert view.counters == {"canary": 0, "fleet": 5}
    assert view.hosts == []


async def test_reset(store: ChartStore, redis: fakeredis.FakeAsyncRedis, clock: Clock, chart: Chart) -> None:
    await store.register(chart)
    await store.report(chart, "canary", host="web-1")
    await store.report(chart, "canary", host="web-2")
    await store.report(chart, "fleet", host="web-3")
    reset_at = clock.tick(3600)
    move = await store.reset(chart, host="operator")
    assert move == Transition("release", "fleet", "canary", "reset", reset_at, "operator")
    assert await stored(store, chart) == Snapshot("canary", 0, reset_at)
    assert (await store.view(chart)).counters == {"canary": 0, "fleet": 5}
    assert await redis.exists(keys.chart_hosts("release", "canary"), keys.chart_hosts("release", "fleet")) == 0
    newest = (await store.history(chart, 1))[0]
    assert (newest["from"], newest["to"], newest["cause"], newest["host"]) == ("fleet", "canary", "reset", "operator")
    # counted again after the reset
    assert (await store.report(chart, "canary", host="web-1")).counted


async def test_register_keeps_state_of_a_changed_chart(store: ChartStore, chart: Chart) -> None:
    await store.register(chart)
    await store.report(chart, "canary")
    changed = load(RELEASE.replace("value: 2}}", "value: 3}}"))
    assert changed.digest != chart.digest
    assert await store.register(changed) == Snapshot("canary", 1, T0)
    assert (await store.definition("release"))["digest"] == changed.digest


async def test_register_refuses_when_the_current_state_was_removed(store: ChartStore, chart: Chart) -> None:
    await store.register(chart)
    await store.report(chart, "canary")
    await store.report(chart, "canary")
    without_fleet = load(
        """
        name: release
        current_state: canary
        states:
          - name: canary
            func: increment
            current: {key: count, value: 0}
            target: {name: done, when: {key: count, value: 2}}
          - name: done
        """
    )
    with pytest.raises(StateRemoved, match="stateservice reset"):
        await store.register(without_fleet)
