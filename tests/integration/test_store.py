"""ChartStore against a real redis-server: exact counts under concurrency, reset, registration."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from stateservice.core.chart import Chart, Snapshot
from stateservice.core.parse import parse
from stateservice.errors import CorruptState, NotCurrent, StateRemoved, StoreUnavailable
from stateservice.store import keys
from stateservice.store.charts import BATCH, ChartStore
from stateservice.store.redis.connect import connect
from stateservice.web.deadline import within
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
    assert await store.registered() == []
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


# -- a transaction whose EXEC goes unanswered --------------------------------------------------------


class ExecBlackHole:
    """A TCP proxy to Redis that, once `armed`, forwards the next EXEC but none of Redis's replies after it.

    What a network black hole (or a Redis stalled right after reading a transaction) does: the
    transaction is applied, and its client never hears so. With `everything`, no connection old
    or new hears anything more until `silent` is cleared (a Redis stopped right after the EXEC).
    """

    def __init__(self, port: int, *, everything: bool = False) -> None:
        self.port = port
        self.everything = everything
        self.armed = False
        self.silent = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.relays: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [client_out, redis_out]
        cut = False

        async def upstream() -> None:
            nonlocal cut
            try:
                while data := await client_in.read(65536):
                    if self.armed and b"EXEC" in data:
                        cut, self.armed = True, False
                        self.silent = self.everything
                    redis_out.write(data)
            finally:
                redis_out.close()  # the client left: so does its connection to Redis

        async def downstream() -> None:
            try:
                while data := await redis_in.read(65536):
                    if not (cut or self.silent):
                        client_out.write(data)
            finally:
                client_out.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
        if self.relays:
            await asyncio.wait(self.relays, timeout=5)


async def test_a_transaction_whose_exec_went_unanswered_is_not_retried(redis_url: str, plain: Redis) -> None:
    # (redis-py turns a connection error while WATCHing into WatchError, which the store retries on)
    hole = ExecBlackHole(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    client = connect(await hole.start(), socket_timeout=0.5)
    store = ChartStore(client, coalesce=False)
    chart = charts.wave(charts.FOREVER)
    try:
        await store.register(chart)
        assert (await store.report(chart, "canary")).counted
        hole.armed = True

        # the EXEC is applied, its answer lost: retrying would count this report (no host=) twice
        with pytest.raises(RedisTimeoutError):
            await store.report(chart, "canary")

        assert await plain.hget(keys.chart_state("wave"), keys.counter_field("canary")) == "2"
        assert (await store.report(chart, "canary")).count == 3  # the store carries on over new connections
    finally:
        await client.aclose()
        await hole.close()


async def test_a_deadline_during_exec_ends_at_once_and_the_store_recovers(redis_url: str, plain: Redis) -> None:
    hole = ExecBlackHole(int(redis_url.rsplit(":", 1)[1].split("/")[0]), everything=True)
    client = connect(await hole.start(), socket_timeout=2.0)
    store = ChartStore(client, coalesce=False)
    chart = charts.wave(charts.FOREVER)
    loop = asyncio.get_running_loop()
    try:
        await store.register(chart)
        hole.armed = True

        started = loop.time()
        with pytest.raises(StoreUnavailable):
            async with within(0.3):  # a request's deadline, cancelling the report while its EXEC is unanswered
                await store.report(chart, "canary", "h1")
        # no UNWATCH after it, over a new connection to the silent Redis (a socket timeout more)
        assert loop.time() - started < 0.3 + 0.5

        hole.silent = False  # Redis answers again: the applied report is seen, nothing stale is read
        again = await store.report(chart, "canary", "h1")
        assert (again.counted, again.count) == (False, 1)
        assert await plain.hget(keys.chart_state("wave"), keys.counter_field("canary")) == "1"
        assert (await store.report(chart, "canary", "h2")).count == 2
    finally:
        await client.aclose()
        await hole.close()


async def test_current_states_of_many_charts_in_one_read(stores: StoreFactory, plain: Redis) -> None:
    store = stores()
    counted, fresh, odd, corrupt = (chain(name, [3]) for name in ("counted", "fresh", "odd", "corrupt"))
    await store.register(counted)
    await store.report(counted, "s0")
    await plain.hset(keys.chart_state("odd"), mapping={"current_state": 'gone "/\\ ü', "entered_at": ""})
    await plain.hset(keys.chart_state("corrupt"), mapping={"current_state": "", "counter:s0": "1"})

    found = await store.current_states([counted, fresh, odd, corrupt])

    assert [s.state for s in found[:2] if isinstance(s, Snapshot)] == ["s0", "s0"]
    assert isinstance(found[2], Snapshot) and found[2].state == 'gone "/\\ ü'
    assert isinstance(found[3], CorruptState) and "has no current_state field" in found[3].message
    assert await plain.hget(keys.chart_state("fresh"), "current_state") == "s0"  # created, as a gate check would
    assert await store.current_states([]) == []

    await plain.hset(keys.chart_state("counted"), "current_state", "s1")  # a repair with redis-cli: seen at once
    await plain.hset(keys.chart_state("fresh"), "entered_at", "yesterday")
    again = await store.current_states([counted, fresh, odd])
    assert isinstance(again[0], Snapshot) and again[0].state == "s1"
    assert isinstance(again[1], CorruptState) and "entered_at is not a timestamp" in again[1].message
    assert again[2] == found[2]


async def test_register_many_writes_what_register_writes_chart_by_chart(stores: StoreFactory, plain: Redis) -> None:
    names = [f"c{i:03d}" for i in range(BATCH + 7)]  # two transactions
    alone, together = stores(), stores()
    for name in names[:3]:
        await alone.register(chain(name, [2, 2]))
    single = {name: await plain.hgetall(keys.chart_state(name)) for name in names[:3]}
    await plain.flushdb()
    await plain.sadd(keys.chart_hosts("c000", "s1"), "stale")  # a host set left over from an earlier chart

    results = await together.register_many([chain(name, [2, 2]) for name in names])

    assert all(isinstance(r, Snapshot) and r.state == "s0" for r in results)
    for name, fields in single.items():  # the same hash, but for when it was entered
        assert (await plain.hgetall(keys.chart_state(name))).keys() == fields.keys()
        assert await plain.hmget(keys.chart_state(name), ["current_state", "counter:s0", "counter:s1"]) == [
            fields["current_state"],
            fields["counter:s0"],
            fields["counter:s1"],
        ]
    assert await plain.exists(keys.chart_hosts("c000", "s1")) == 0
    assert await plain.smembers(keys.charts_index()) == set(names)
    definition = await plain.hgetall(keys.chart_definition("c200"))
    assert definition.keys() == {"path", "digest", "source", "registered_at"}
    assert (definition["path"], definition["source"]) == ("c200.yaml", chain("c200", [2, 2]).source)

    quoted = parse('# "déploiement" \\ 漢字 \u2028\n' + chain("quoted", [1]).source, "q.yaml").unwrap()
    await together.register_many([quoted])
    assert await plain.hget(keys.chart_definition("quoted"), "source") == quoted.source  # as written, via JSON


async def test_register_many_keeps_states_and_refuses_a_removed_one_alone(stores: StoreFactory, plain: Redis) -> None:
    store = stores()
    kept, moved, fresh = chain("kept", [2, 2]), chain("moved", [1, 1]), chain("fresh", [1])
    await store.register_many([kept, moved])
    await store.report(kept, "s0")
    await store.report(moved, "s0")
    await store.report(moved, "s1")  # at s2: a one-step chart lacks it
    old_moved = await plain.hgetall(keys.chart_definition("moved"))

    changed_kept, shrunk_moved = chain("kept", [5, 2]), chain("moved", [1])
    with capture_logs() as logs:
        results = await store.register_many([changed_kept, shrunk_moved, fresh])

    assert isinstance(results[0], Snapshot) and (results[0].state, results[0].count) == ("s0", 1)
    assert isinstance(results[1], StateRemoved) and isinstance(results[2], Snapshot)
    assert await plain.hget(keys.chart_definition("kept"), "digest") == changed_kept.digest
    assert await plain.hgetall(keys.chart_definition("moved")) == old_moved  # untouched: its old file stays
    assert await plain.hget(keys.chart_state("moved"), "current_state") == "s2"
    [changed] = [e for e in logs if e["event"] == "chart_definition_changed"]
    assert (changed["chart"], changed["old_digest"], changed["count"]) == ("kept", kept.digest, 1)
    assert await plain.smembers(keys.charts_index()) == {"kept", "moved", "fresh"}
