"""Time states with no leader running: every read applies the due moves, once, in order, in one transaction.

The HTTP tests run `create_app(..., scheduler=False)`, so nothing but the request itself can move a
chart. The store tests inject an async clock into `ChartStore` to stand exactly at a due time, and to
pause a reader between its decision and its write (a former leader that wakes up late).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.core.parse import parse
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from tests.support import charts
from tests.support.app import Client, MakeClient
from tests.support.charts import load
from tests.support.service import run_cli

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # "long ago": the entered_at an operator writes with redis-cli
T0_TEXT = "2024-01-01T00:00:00Z"
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

SOAK_1S = charts.chart("soak", "wait", charts.timed("wait", "go", "elapsed", "1s"), charts.final("go"))

CLOCK = charts.chart("window", "wait", charts.timed("wait", "go", "clock", "'%s'"), charts.final("go"))

# first -> second -> third move by elapsed time; done is final
CHAIN = charts.chart(
    "chain",
    "first",
    charts.timed("first", "second", "elapsed", "10m"),
    charts.timed("second", "third", "elapsed", "20m"),
    charts.timed("third", "done", "elapsed", "3650d"),
    charts.final("done"),
)

SOAK_THEN_GATE = charts.chart(
    "wave",
    "soak",
    charts.timed("soak", "gate", "elapsed", "10m"),
    charts.increment("gate", "done", 2),
    charts.final("done"),
)

# an elapsed-only loop (allowed: only a loop with a clock time is refused), e.g. a recurring window
BLINK = charts.chart(
    "blink", "open", charts.timed("open", "closed", "elapsed", "50m"), charts.timed("closed", "open", "elapsed", "10m")
)

COUNTED = charts.chart("counted", "gate", charts.increment("gate", "done", 1), charts.final("done"))


def steps(n: int, name: str = "steps") -> Chart:
    """s0 -> s1 -> ... -> sN: each of the first n states moves on 1 s after it was entered."""
    lines = [f"name: {name}", "current_state: s0", "states:"]
    for i in range(n):
        lines += [
            f"  - name: s{i}",
            "    func: time",
            f"    target: {{name: s{i + 1}, when: {{key: elapsed, value: 1s}}}}",
        ]
    lines.append(f"  - name: s{n}")
    return parse("\n".join(lines) + "\n", f"{name}.yaml").unwrap()


def at(text: str) -> datetime:
    assert ISO_Z.fullmatch(text), text
    return codec.read_timestamp(text)


def ts(moment: datetime) -> str:
    return codec.timestamp(moment)


class FakeClock:
    """An injected async clock that says what the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    async def __call__(self) -> datetime:
        return self.now


class GatedClock(FakeClock):
    """Its first reading waits until `release` is set: the reader is paused right after it decided."""

    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()
        self._gated = True

    async def __call__(self) -> datetime:
        if self._gated:
            self._gated = False
            self.waiting.set()
            await self.release.wait()
        return self.now


@pytest.fixture
def make_client(serve: MakeClient) -> MakeClient:
    """`await make_client(chart, ...)`: a real server (no scheduler: nobody leads) and a client for it."""
    return functools.partial(serve, scheduler=False)


async def get_json(client: Client, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def history(client: Client, chart: str) -> list[dict[str, Any]]:
    """Oldest first."""
    body = await get_json(client, f"/charts/{chart}/history")
    records: list[dict[str, Any]] = body["history"]
    return records[::-1]


async def stored_history(plain: Redis, chart: str) -> list[dict[str, str]]:
    """The history stream as redis-cli shows it, oldest first."""
    return [fields for _, fields in await plain.xrange(keys.chart_history(chart))]


def moves(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["from"], r["to"], r["cause"]) for r in records]


def check_time_record(record: dict[str, Any], due: datetime | None = None) -> None:
    """A time move's record: cause time, no host, due_at when it fell due, applied (at) no earlier."""
    assert record["cause"] == "time"
    assert record["host"] is None
    assert at(record["at"]) >= at(record["due_at"])
    if due is not None:
        assert record["due_at"] == ts(due)


# -- GET at the due time, with nobody leading --------------------------------------------------


async def test_get_after_an_elapsed_state_falls_due_sees_the_new_state_with_no_leader(
    make_client: MakeClient, plain: Redis
) -> None:
    client = await make_client(load(SOAK_1S))
    assert await get_json(client, "/leader") == {"id": None, "pid": None, "expires_at": None}
    view = await get_json(client, "/charts/soak")
    entered, due = at(view["entered_at"]), at(view["due_at"])
    assert due == entered + timedelta(seconds=1)
    assert (await client.get("/state?state=wait")).status == 200
    assert (await client.get("/state?state=go")).status == 406

    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.05)
    assert await plain.hget("stateservice:{soak}", "current_state") == "wait"  # nothing moved it by itself

    resp = await client.get("/state?state=go")
    assert resp.status == 200, await resp.text()
    assert (await client.get("/state?state=wait")).status == 406
    [record] = await history(client, "soak")
    assert moves([record]) == [("wait", "go", "time")]
    check_time_record(record, due)
    assert at(record["at"]) - due < timedelta(seconds=1)
    assert await get_json(client, "/leader") == {"id": None, "pid": None, "expires_at": None}


@pytest.mark.parametrize("clock", ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00"])
@pytest.mark.parametrize("read", ["/state?state=go", "/charts/window/state?state=go", "/charts/window", "/charts"])
async def test_a_clock_state_whose_time_has_passed_moves_on_at_the_first_read(
    make_client: MakeClient, plain: Redis, clock: str, read: str
) -> None:
    client = await make_client(load(CLOCK % clock))
    assert await plain.hget("stateservice:{window}", "current_state") == "wait"  # registered, not yet read
    registered = at(await plain.hget("stateservice:{window}", "entered_at"))

    resp = await client.get(read)

    assert resp.status == 200, await resp.text()
    assert await plain.hget("stateservice:{window}", "current_state") == "go"
    [record] = await history(client, "window")
    assert moves([record]) == [("wait", "go", "time")]
    check_time_record(record, registered)  # entered after its time: due the moment it was entered


# -- GET /charts/{chart}: due_at ----------------------------------------------------------------


async def test_show_chart_has_due_at_for_a_current_time_state_and_null_otherwise(
    make_client: MakeClient, plain: Redis
) -> None:
    client = await make_client(load(CLOCK % "3000-01-01T00:00:00+02:00"), load(SOAK_THEN_GATE), load(COUNTED))

    window = await get_json(client, "/charts/window")
    assert window["current_state"] == "wait"
    assert window["due_at"] == "2999-12-31T22:00:00.000000Z"  # UTC, whatever offset the chart wrote

    wave = await get_json(client, "/charts/wave")
    assert wave["current_state"] == "soak"
    assert at(wave["due_at"]) == at(wave["entered_at"]) + timedelta(minutes=10)

    counted = await get_json(client, "/charts/counted")
    assert (counted["current_state"], counted["due_at"]) == ("gate", None)
    assert (await client.put("/charts/counted/state?state=gate")).status == 200
    counted = await get_json(client, "/charts/counted")
    assert (counted["current_state"], counted["final"], counted["due_at"]) == ("done", True, None)

    await plain.hset("stateservice:{wave}", "entered_at", T0_TEXT)  # soak fell due long ago
    wave = await get_json(client, "/charts/wave")
    assert (wave["current_state"], wave["due_at"]) == ("gate", None)  # moved on: an increment state has none


# -- catch-up after downtime ------------------------------------------------------------------


async def test_catch_up_of_a_chain_written_long_ago_advances_through_each_state_in_order(
    make_client: MakeClient, plain: Redis
) -> None:
    # the state as it was when the last service stopped: entered `first` long ago
    await plain.hset("stateservice:{chain}", mapping={"current_state": "first", "entered_at": T0_TEXT})
    client = await make_client(load(CHAIN))
    assert await plain.hget("stateservice:{chain}", "current_state") == "first"  # registering carried it over
    before = datetime.now(UTC) - timedelta(seconds=1)

    view = await get_json(client, "/charts/chain")  # one read

    assert view["current_state"] == "third"
    # each state entered at its predecessor's due time: `second` counted its 20m from T0 + 10m
    assert view["entered_at"] == ts(T0 + timedelta(minutes=30))
    assert view["due_at"] == ts(T0 + timedelta(minutes=30, days=3650))
    records = await history(client, "chain")
    assert moves(records) == [("first", "second", "time"), ("second", "third", "time")]
    check_time_record(records[0], T0 + timedelta(minutes=10))
    check_time_record(records[1], T0 + timedelta(minutes=30))
    assert records[0]["at"] == records[1]["at"]  # one transaction
    assert at(records[0]["at"]) >= before
    assert [r["to"] for r in await stored_history(plain, "chain")] == ["second", "third"]


async def test_a_chain_advances_exactly_at_each_due_time_by_the_injected_clock(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    chart = load(CHAIN)
    clock = FakeClock(T0)
    store = ChartStore(clients(), clock=clock)
    await store.register(chart)
    tick = timedelta(microseconds=1)

    expected = [
        (T0 + timedelta(minutes=10) - tick, "first", T0, T0 + timedelta(minutes=10)),
        (T0 + timedelta(minutes=10), "second", T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)),
        (T0 + timedelta(minutes=30) - tick, "second", T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)),
        (T0 + timedelta(minutes=30), "third", T0 + timedelta(minutes=30), T0 + timedelta(minutes=30, days=3650)),
    ]
    for now, state, entered, due in expected:
        clock.now = now
        snap = await store.current_state(chart)
        assert (snap.state, snap.entered_at) == (state, entered), now
        view = await store.view(chart)
        assert (view.snapshot.state, view.due_at) == (state, due), now

    records = await stored_history(plain, "chain")
    assert [(r["from"], r["to"], r["cause"], r["due_at"], r["at"]) for r in records] == [
        ("first", "second", "time", ts(T0 + timedelta(minutes=10)), ts(T0 + timedelta(minutes=10))),
        ("second", "third", "time", ts(T0 + timedelta(minutes=30)), ts(T0 + timedelta(minutes=30))),
    ]


async def test_a_long_catch_up_of_a_time_loop_is_complete_before_the_read_answers(
    make_client: MakeClient, plain: Redis
) -> None:
    """About 2000 moves fell due while nothing ran (six weeks of an hourly window): one read must not
    answer from a state whose time has passed (the issue's "never a stale wait")."""
    client = await make_client(load(BLINK))
    entered = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1000, minutes=55)
    await plain.hset("stateservice:{blink}", "entered_at", ts(entered))

    resp = await client.get("/charts/blink/state?state=closed")
    view = await get_json(client, "/charts/blink")

    assert resp.status == 200, await resp.text()  # 55 min into the hour: closed
    assert view["entered_at"] == ts(entered + timedelta(hours=1000, minutes=50))
    assert view["due_at"] == ts(entered + timedelta(hours=1001))
    assert at(view["due_at"]) > datetime.now(UTC)


# -- exactly once ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_racing_stores_apply_each_transition_exactly_once(
    clients: Callable[[], Redis], plain: Redis, seed: int
) -> None:
    chart = steps(4)
    await ChartStore(clients(), clock=FakeClock(T0)).register(chart)
    rng = random.Random(seed)

    class Jittery(FakeClock):
        """Each reading somewhere in the 5 s after T0: racers disagree on how much is due."""

        async def __call__(self) -> datetime:
            await asyncio.sleep(0)
            return T0 + timedelta(seconds=rng.uniform(0, 5))

    stores = [ChartStore(clients(), clock=Jittery(T0)) for _ in range(3)]  # three workers, three clients

    snaps = await asyncio.gather(*(stores[i % 3].advance(chart) for i in range(20)))
    final = await ChartStore(clients(), clock=FakeClock(T0 + timedelta(seconds=5))).advance(chart)

    assert {s.state for s in snaps} <= {f"s{i}" for i in range(5)}
    assert (final.state, final.entered_at) == ("s4", T0 + timedelta(seconds=4))
    records = await stored_history(plain, "steps")
    assert [(r["from"], r["to"], r["cause"]) for r in records] == [(f"s{i}", f"s{i + 1}", "time") for i in range(4)]
    assert [r["due_at"] for r in records] == [ts(T0 + timedelta(seconds=i + 1)) for i in range(4)]


async def test_racing_workers_over_http_record_each_transition_once(make_client: MakeClient, plain: Redis) -> None:
    chart = steps(3)
    workers = [await make_client(chart) for _ in range(3)]
    await plain.hset("stateservice:{steps}", mapping={"current_state": "s0", "entered_at": T0_TEXT})

    statuses = await asyncio.gather(
        *(workers[i % 3].get("/charts/steps/state?state=s3") for i in range(20)),
        *(workers[i % 3].get("/charts/steps") for i in range(10)),
    )

    assert [r.status for r in statuses] == [200] * 30
    records = await history(workers[0], "steps")
    assert moves(records) == [("s0", "s1", "time"), ("s1", "s2", "time"), ("s2", "s3", "time")]
    for i, record in enumerate(records):
        check_time_record(record, T0 + timedelta(seconds=i + 1))


async def test_a_reader_paused_after_deciding_applies_nothing_twice_nor_stale(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    """A former leader that read `first` as due, then slept while others moved and reset the chart."""
    chart = steps(2, "paused")
    await ChartStore(clients(), clock=FakeClock(T0)).register(chart)
    late = T0 + timedelta(seconds=1, milliseconds=500)  # s0 due (at T0 + 1s), s1 not yet
    paused_clock = GatedClock(late)
    paused = ChartStore(clients(), clock=paused_clock)
    other = ChartStore(clients(), clock=FakeClock(late))

    reading = asyncio.create_task(paused.current_state(chart))
    await paused_clock.waiting.wait()  # it has read s0 (entered T0) and asks the time to decide
    assert (await other.advance(chart)).state == "s1"
    await other.reset(chart, host="operator")  # s0 again, entered at `late`: not due for a second
    paused_clock.release.set()
    snap = await reading

    assert (snap.state, snap.entered_at) == ("s0", late)
    records = await stored_history(plain, "paused")
    assert [(r["from"], r["to"], r["cause"]) for r in records] == [("s0", "s1", "time"), ("s1", "s0", "reset")]
    assert await plain.hget(keys.chart_state("paused"), keys.CURRENT_STATE) == "s0"


# -- a PUT right after a due time state ----------------------------------------------------------


async def test_a_put_on_the_increment_state_after_a_due_time_state_counts(
    make_client: MakeClient, plain: Redis
) -> None:
    client = await make_client(load(SOAK_THEN_GATE))
    await plain.hset("stateservice:{wave}", "entered_at", T0_TEXT)  # soak (10m) fell due long ago
    await plain.sadd("stateservice:{wave}:hosts:gate", "web-1")  # left over from a former visit of gate

    resp = await client.put("/charts/wave/state?state=gate&host=web-1")

    assert resp.status == 200, await resp.text()
    assert resp.headers["Stateservice-Counted"] == "true"
    assert resp.headers["Stateservice-State"] == "gate"
    view = await get_json(client, "/charts/wave")
    assert (view["current_state"], view["entered_at"], view["due_at"]) == ("gate", ts(T0 + timedelta(minutes=10)), None)
    assert [s["counter"] for s in view["states"] if s["name"] == "gate"] == [{"key": "hosts", "value": 1}]
    assert view["hosts_counted"] == ["web-1"]
    [record] = await history(client, "wave")
    assert moves([record]) == [("soak", "gate", "time")]
    check_time_record(record, T0 + timedelta(minutes=10))

    assert (await client.put("/charts/wave/state?state=gate&host=web-1")).headers["Stateservice-Counted"] == "false"
    resp = await client.put("/charts/wave/state?state=gate&host=web-2")
    assert resp.headers["Stateservice-State"] == "done"
    assert moves(await history(client, "wave")) == [("soak", "gate", "time"), ("gate", "done", "put")]


async def test_a_put_on_a_time_state_that_fell_due_is_told_the_current_state(
    make_client: MakeClient, plain: Redis
) -> None:
    client = await make_client(load(SOAK_THEN_GATE))
    await plain.hset("stateservice:{wave}", "entered_at", T0_TEXT)

    resp = await client.put("/charts/wave/state?state=soak")

    assert resp.status == 406, await resp.text()
    body = await resp.json()
    assert (body["error"], body["current_state"]) == ("not_current", "gate")
    assert moves(await history(client, "wave")) == [("soak", "gate", "time")]


# -- stateservice status ----------------------------------------------------------------------


async def status(redis_url: str, cwd: Path, *args: str) -> str:
    result = await asyncio.to_thread(run_cli, "status", *args, "--redis", redis_url, cwd=cwd)
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    return result.stdout


async def test_status_shows_due_at_of_a_current_time_state(
    clients: Callable[[], Redis], redis_url: str, tmp_path: Path
) -> None:
    await ChartStore(clients()).register(load(CLOCK % "3000-01-01T00:00:00Z"))

    as_json = json.loads(await status(redis_url, tmp_path, "window", "--json"))
    text = await status(redis_url, tmp_path, "window")

    assert (as_json["current_state"], as_json["due_at"]) == ("wait", "3000-01-01T00:00:00.000000Z")
    assert re.search(r"current_state\s+wait", text), text
    assert re.search(r"due_at\s+3000-01-01T00:00:00", text), text


async def test_status_applies_the_due_moves_and_shows_the_advanced_state(
    clients: Callable[[], Redis], plain: Redis, redis_url: str, tmp_path: Path
) -> None:
    await ChartStore(clients()).register(load(CHAIN))
    await plain.hset("stateservice:{chain}", "entered_at", T0_TEXT)

    text = await status(redis_url, tmp_path)

    assert re.search(r"current_state\s+third", text), text
    assert re.search(r"entered_at\s+2024-01-01T00:30:00", text), text
    records = await stored_history(plain, "chain")
    assert [(r["to"], r["cause"], r["due_at"]) for r in records] == [
        ("second", "time", ts(T0 + timedelta(minutes=10))),
        ("third", "time", ts(T0 + timedelta(minutes=30))),
    ]
    as_json = json.loads(await status(redis_url, tmp_path, "chain", "--json"))
    assert (as_json["current_state"], as_json["due_at"]) == ("third", ts(T0 + timedelta(minutes=30, days=3650)))
    assert len(await stored_history(plain, "chain")) == 2  # nothing applied twice
