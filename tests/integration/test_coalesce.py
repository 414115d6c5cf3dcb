"""Group commit: concurrent PUTs to one chart answer exactly as if they had been serialised.

Every claim of "same correctness" runs with coalescing on and off. Requests go through real
aiohttp servers (two apps on one Redis are two workers) and are fired together with
`asyncio.gather`, so that, with coalescing on, they arrive while a transaction is in flight
and share the next one. Each PUT names its own host where the test needs to know which
request did what (a history record names the host that moved the chart).
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from stateservice.store import keys
from stateservice.web.appkeys import STORE
from tests.support import charts
from tests.support.app import Client, MakeClient
from tests.support.charts import FOREVER, wave

COALESCE = pytest.mark.parametrize("coalesce", [True, False], ids=["coalesce", "no-coalesce"])


def fix_chart(b_target: int) -> str:
    """Chart `fix`: a counts forever and is never entered by a transition; an operator moves the chart
    to b, whose reports then move it to c (entered once, so its counter and host set start once)."""
    return charts.chart(
        "fix",
        "a",
        charts.increment("a", "b", FOREVER),
        charts.increment("b", "c", b_target),
        charts.increment("c", "done", FOREVER),
        charts.final("done"),
    )


@dataclass(frozen=True)
class Answer:
    """One PUT's answer: for a 200 the Stateservice headers, for a 406 the body's current_state."""

    named: str
    host: str | None
    status: int
    counted: bool | None
    state: str | None  # the state after the report (200) or the current one (406)


@pytest.fixture
def make_client(serve: MakeClient) -> MakeClient:
    """`await make_client(*charts, coalesce=...)`: a real server (one worker) and a client without a connection cap."""
    return functools.partial(serve, scheduler=False, unlimited=True)


async def put(client: Client, state: str, host: str | None = None, chart: str | None = None) -> Answer:
    path = f"/charts/{chart}/state" if chart else "/state"
    params = {"state": state, **({"host": host} if host else {})}
    resp = await client.put(path, params=params)
    if resp.status == 200:
        assert await resp.text() == state + "\n"
        counted = resp.headers["Stateservice-Counted"]
        assert counted in ("true", "false"), counted
        return Answer(state, host, 200, counted == "true", resp.headers["Stateservice-State"])
    body = await resp.json()
    assert resp.status == 406, body
    assert body["error"] == "not_current" and body["state"] == state, body
    return Answer(state, host, 406, None, body["current_state"])


def check_crossing(answers: list[Answer], old: str, new: str, target: int) -> Answer:
    """The reports naming `old`: `target` counted (the last of them moved the chart), the rest refused. The mover."""
    named = [a for a in answers if a.named == old]
    ok = [a for a in named if a.status == 200]
    assert len(ok) == target, f"{len(ok)} of {len(named)} reports of {old} answered 200, want {target}"
    assert all(a.counted for a in ok), [a for a in ok if not a.counted]
    movers = [a for a in ok if a.state == new]
    assert len(movers) == 1, f"{len(movers)} reports say they moved the chart to {new}"
    assert sorted(a.state or "" for a in ok if a is not movers[0]) == [old] * (target - 1)
    refused = [a for a in named if a.status != 200]
    assert len(refused) == len(named) - target
    assert all(a.status == 406 and a.state == new for a in refused), {(a.status, a.state) for a in refused}
    return movers[0]


async def counter(plain: Redis, chart: str, state: str) -> int:
    return int(await plain.hget(keys.chart_state(chart), keys.counter_field(state)) or 0)


async def history(plain: Redis, chart: str) -> list[dict[str, str]]:
    entries: list[tuple[str, dict[str, str]]] = await plain.xrange(keys.chart_history(chart))  # type: ignore[assignment]
    return [fields for _, fields in entries]


# -- a batch that crosses the threshold ----------------------------------------------------------


@COALESCE
@pytest.mark.parametrize(("reports", "target"), [(30, 10), (64, 1), (40, 40)])
async def test_a_batch_crossing_the_threshold_moves_once_and_refuses_those_after(
    make_client: MakeClient, plain: Redis, coalesce: bool, reports: int, target: int
) -> None:
    client = await make_client(wave(target), coalesce=coalesce)

    answers = await asyncio.gather(*(put(client, "canary", f"h{i}") for i in range(reports)))

    mover = check_crossing(answers, "canary", "fleet", target)
    assert await counter(plain, "wave", "canary") == target
    assert await counter(plain, "wave", "fleet") == 0
    [record] = await history(plain, "wave")
    assert (record["from"], record["to"], record["cause"], record["host"]) == ("canary", "fleet", "put", mover.host)
    # canary's visit ended: it keeps who was counted (a repeat is told so); fleet's visit is new: nobody yet
    assert await plain.smembers(keys.chart_hosts("wave", "canary")) == {
        a.host for a in answers if a.named == "canary" and a.counted
    }
    assert await plain.smembers(keys.chart_hosts("wave", "fleet")) == set()


@COALESCE
async def test_reports_naming_the_new_state_count_once_it_is_current(
    make_client: MakeClient, plain: Redis, coalesce: bool
) -> None:
    client = await make_client(wave(12), coalesce=coalesce)

    calls = [put(client, "canary" if i % 2 else "fleet", f"h{i}") for i in range(80)]
    answers = await asyncio.gather(*calls)

    check_crossing(answers, "canary", "fleet", 12)
    for_fleet = [a for a in answers if a.named == "fleet"]
    early = [a for a in for_fleet if a.status == 406]
    counted = [a for a in for_fleet if a.status == 200]
    assert all(a.state == "canary" for a in early)  # refused while canary was still current
    assert all(a.counted and a.state == "fleet" for a in counted)
    assert len(early) + len(counted) == 40
    assert await counter(plain, "wave", "fleet") == len(counted)
    assert await plain.smembers(keys.chart_hosts("wave", "fleet")) == {a.host for a in counted}
    assert len(await history(plain, "wave")) == 1


# -- a batch with duplicates of one host -----------------------------------------------------------


@COALESCE
async def test_a_batch_of_one_host_counts_it_once(make_client: MakeClient, plain: Redis, coalesce: bool) -> None:
    client = await make_client(wave(100), coalesce=coalesce)

    answers = await asyncio.gather(*(put(client, "canary", "web-1") for _ in range(50)))

    assert all(a.status == 200 and a.state == "canary" for a in answers)
    assert sorted(bool(a.counted) for a in answers) == [False] * 49 + [True]
    assert await counter(plain, "wave", "canary") == 1
    assert await plain.smembers(keys.chart_hosts("wave", "canary")) == {"web-1"}


@COALESCE
async def test_a_host_counted_before_the_batch_is_not_counted_again_in_it(
    make_client: MakeClient, plain: Redis, coalesce: bool
) -> None:
    client = await make_client(wave(100), coalesce=coalesce)
    assert (await put(client, "canary", "web-1")).counted

    calls = [put(client, "canary", "web-1" if i % 2 else "web-2") for i in range(40)]
    answers = await asyncio.gather(*calls)

    assert all(a.status == 200 for a in answers)
    assert not any(a.counted for a in answers if a.host == "web-1")
    assert sum(bool(a.counted) for a in answers if a.host == "web-2") == 1
    assert await counter(plain, "wave", "canary") == 2
    assert await plain.smembers(keys.chart_hosts("wave", "canary")) == {"web-1", "web-2"}


@COALESCE
async def test_duplicate_hosts_in_a_batch_that_crosses_the_threshold(
    make_client: MakeClient, plain: Redis, coalesce: bool
) -> None:
    client = await make_client(wave(5), coalesce=coalesce)
    hosts = [f"web-{i % 10}" for i in range(60)]  # ten hosts, six reports each
    random.Random(4).shuffle(hosts)

    answers = await asyncio.gather(*(put(client, "canary", host) for host in hosts))

    counted = [a for a in answers if a.counted]
    assert len(counted) == 5 and len({a.host for a in counted}) == 5, counted
    assert sorted(a.state or "" for a in counted) == ["canary"] * 4 + ["fleet"]
    repeated = [a for a in answers if a.status == 200 and not a.counted]
    # a counted host's repeat is answered 200, not counted, before the move and after it (a safe retry; the
    # header names the state current then); a host never counted reports the old state after the move: 406
    winners = {c.host for c in counted}
    assert all(a.host in winners and a.state in ("canary", "fleet") for a in repeated)
    refused = [a for a in answers if a.status == 406]
    assert all(a.state == "fleet" and a.host not in winners for a in refused)
    assert len(counted) + len(repeated) + len(refused) == 60
    assert await counter(plain, "wave", "canary") == 5
    [record] = await history(plain, "wave")
    assert record["host"] == next(a.host for a in counted if a.state == "fleet")


# -- a batch mixing charts ---------------------------------------------------------------------------


@COALESCE
async def test_a_batch_mixing_charts_keeps_each_exact(make_client: MakeClient, plain: Redis, coalesce: bool) -> None:
    targets = {"alpha": 7, "beta": 11, "gamma": 40}
    client = await make_client(*(wave(t, name) for name, t in targets.items()), coalesce=coalesce)
    calls = [(name, i) for i in range(30) for name in targets]  # interleaved: every batch has all three

    answers = await asyncio.gather(*(put(client, "canary", f"{name}-{i}", chart=name) for name, i in calls))

    for name, target in targets.items():
        mine = [a for a in answers if a.host and a.host.startswith(name + "-")]
        assert len(mine) == 30
        if target <= 30:
            mover = check_crossing(mine, "canary", "fleet", target)
            [record] = await history(plain, name)
            assert record["host"] == mover.host
            assert await counter(plain, name, "canary") == target
        else:
            assert all(a.status == 200 and a.counted and a.state == "canary" for a in mine)
            assert await history(plain, name) == []
            assert await counter(plain, name, "canary") == 30
            assert await plain.smembers(keys.chart_hosts(name, "canary")) == {a.host for a in mine}


# -- shared reads --------------------------------------------------------------------------------------

# every report moves the chart: one -> two -> one ...
FLIP = charts.chart("flip", "one", charts.increment("one", "two", 1), charts.increment("two", "one", 1))


@COALESCE
async def test_a_get_after_a_put_sees_it_while_other_gets_are_in_flight(
    make_client: MakeClient, coalesce: bool
) -> None:
    """Shared reads never answer a GET from a read sent before it arrived: read-your-writes under load."""
    client = await make_client(charts.load(FLIP, "flip.yaml"), coalesce=coalesce)
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            resp = await client.get("/state?state=one")
            assert resp.status in (200, 406)
            await resp.read()

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    try:
        state = "one"
        for _ in range(20):
            answer = await put(client, state)
            assert answer.status == 200 and answer.counted
            assert answer.state != state
            state = answer.state or ""
            resp = await client.get(f"/state?state={state}")
            assert resp.status == 200, await resp.text()
    finally:
        stop.set()
        await asyncio.gather(*readers)


# -- a batch during a redis-cli repair ---------------------------------------------------------------


@COALESCE
async def test_a_batch_during_a_redis_cli_repair_stays_consistent(
    make_client: MakeClient, plain: Redis, coalesce: bool
) -> None:
    """Waves of PUTs to a, b and c while an operator moves the chart to b and bumps counters.

    The operator's writes (HSET current_state; HINCRBY of a counter, the atomic form of
    "set a counter") land in the middle of the PUTs' transactions: none may be lost, and
    no PUT may count twice or in a state it was not told.
    """
    b_target = 25
    client = await make_client(charts.load(fix_chart(b_target), "fix.yaml"), coalesce=coalesce)
    key = keys.chart_state("fix")
    rng = random.Random(7)
    bumps = {"a": 0, "b": 0}

    async def repair(wave_no: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.01))
        if wave_no == 3:
            await plain.hset(key, keys.CURRENT_STATE, "b")  # the README's "move a chart to another state"
        elif wave_no == 5:
            await plain.hincrby(key, keys.counter_field("b"), 3)
            bumps["b"] += 3
        else:
            await plain.hincrby(key, keys.counter_field("a"), 100)
            bumps["a"] += 100

    answers: list[Answer] = []
    for wave_no in range(10):
        calls = [put(client, "abc"[i % 3], f"w{wave_no}-{i}") for i in range(45)]
        done, _ = await asyncio.gather(asyncio.gather(*calls), repair(wave_no))
        answers += done

    def ok(state: str) -> list[Answer]:
        return [a for a in answers if a.named == state and a.status == 200]

    assert all(a.status in (200, 406) for a in answers)
    assert all(a.counted for a in answers if a.status == 200)  # every host is unique
    assert await plain.hget(key, keys.CURRENT_STATE) == "c"
    # a is never entered again: its counter is every report counted in it plus the operator's bumps
    assert await counter(plain, "fix", "a") == len(ok("a")) + bumps["a"]
    assert await plain.smembers(keys.chart_hosts("fix", "a")) == {a.host for a in ok("a")}
    # b was entered once (by the operator) and left once (by the report that reached the target)
    assert await counter(plain, "fix", "b") == len(ok("b")) + bumps["b"]
    [mover] = [a for a in ok("b") if a.state == "c"]
    assert b_target - bumps["b"] <= len(ok("b")) <= b_target  # the bump may land before the move, or after
    # c was entered once, by that report, with its counter and host set fresh
    assert all(a.state == "c" for a in ok("c"))
    assert await counter(plain, "fix", "c") == len(ok("c"))
    assert await plain.smembers(keys.chart_hosts("fix", "c")) == {a.host for a in ok("c")}
    # the history: that one move and nothing else, recorded once
    records = await history(plain, "fix")
    assert [(r["from"], r["to"], r["cause"], r["host"]) for r in records] == [("b", "c", "put", mover.host)]


# -- exact counts through two workers -------------------------------------------------------------------


@pytest.mark.slow
@COALESCE
@pytest.mark.parametrize("target", [300, FOREVER], ids=["crossing", "counting"])
async def test_exact_counts_for_many_concurrent_puts_through_two_workers(
    make_client: MakeClient, plain: Redis, coalesce: bool, target: int
) -> None:
    reports = 600
    workers = [await make_client(wave(target), coalesce=coalesce) for _ in range(2)]

    calls = [put(workers[i % 2], "canary", None if i % 3 else f"h{i}") for i in range(reports)]
    answers = await asyncio.gather(*calls)

    if target < reports:
        check_crossing(answers, "canary", "fleet", target)
        assert len(await history(plain, "wave")) == 1
        assert await counter(plain, "wave", "canary") == target
    else:
        assert all(a.status == 200 and a.counted and a.state == "canary" for a in answers)
        assert await history(plain, "wave") == []
        assert await counter(plain, "wave", "canary") == reports
    for worker in workers:
        store = worker.app[STORE]
        assert store.coalesce is coalesce


# -- batching keeps one hot chart's transactions from invalidating each other ---------------------------


async def test_group_commit_batches_a_hot_chart_with_few_retries(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(wave(FOREVER), coalesce=True)
    assert (await put(client, "canary", "warm-up")).counted
    store = client.app[STORE]
    commits, retries = store.commits, store.retries

    answers = await asyncio.gather(*(put(client, "canary") for _ in range(64)))

    assert all(a.status == 200 and a.counted for a in answers)
    assert await counter(plain, "wave", "canary") == 65
    commits, retries = store.commits - commits, store.retries - retries
    assert 1 <= commits <= 64 // 4, f"{commits} transactions for 64 PUTs: no batching"
    assert retries / commits <= 0.2, f"{retries} retries for {commits} transactions"


async def test_without_coalescing_each_put_is_its_own_transaction(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(wave(FOREVER), coalesce=False)
    assert (await put(client, "canary", "warm-up")).counted
    store = client.app[STORE]
    commits = store.commits

    answers = await asyncio.gather(*(put(client, "canary") for _ in range(64)))

    assert all(a.status == 200 and a.counted for a in answers)
    assert store.commits - commits == 64
    assert await counter(plain, "wave", "canary") == 65
