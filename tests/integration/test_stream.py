"""store/stream.py against a real redis-server: entries applied, dead letters, duplicates, claims, recovery;
and exactly once through two real workers, one of them SIGKILLed while the stream is applied."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from structlog.testing import capture_logs

from stateservice.core.machines import configuration_from, instance_id
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Event, Machines
from stateservice.store.redis.connect import connect
from stateservice.store.stream import FORGET_IDLE, StreamConsumer, consumer_name, reader_for
from stateservice.store.stream_entry import Rejected, parse
from tests.integration.test_metrics import total
from tests.support import charts
from tests.support.redisproc import RedisProcess
from tests.support.service import ServiceProcess, Services, http, wait_until

CHAIN: dict[str, Any] = {
    "name": "chain",
    "version": "v1",
    "states": [f"s{i}" for i in range(6)],
    "starting_state": "s0",
    "transitions": [{"from": f"s{i}", "to": f"s{i + 1}", "event": "step"} for i in range(5)],
}
STREAM = keys.events_stream()
GROUP = keys.MACHINES_GROUP


@pytest.fixture
async def machines(clients: Callable[[], Redis]) -> AsyncIterator[Machines]:
    store = Machines(clients(), local_clock(), retention=3600)
    assert await store.define(configuration_from(CHAIN))
    yield store
    await store.close()


@pytest.fixture
async def consumers(machines: Machines, redis_url: str) -> AsyncIterator[Callable[..., StreamConsumer]]:
    made: list[StreamConsumer] = []

    def make(name: str = "test:1", claim_after: float = 30.0, reader: Redis | None = None) -> StreamConsumer:
        reader = reader or reader_for(redis_url)
        consumer = StreamConsumer(machines, reader, claim_after=claim_after, name=name, block_ms=10)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        await consumer.close()


async def drain(consumer: StreamConsumer) -> None:
    """Step until a turn finds nothing to do."""
    while await consumer.step():
        pass


async def pending(plain: Redis) -> int:
    return int((await plain.xpending(STREAM, GROUP))["pending"])


async def test_entries_by_dest_and_by_properties_are_applied_and_acknowledged(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xadd(
        STREAM, {"dest": "a", "event": "step", "event_id": "e:1", "originator": "cron", "details": '{"n":1}'}
    )
    by_properties = await plain.xadd(
        STREAM, {"configuration": "chain:v1", "properties": '{"rack":"r3","host":"web1"}', "event": "step"}
    )

    await drain(consumers())

    derived = instance_id("chain:v1", {"host": "web1", "rack": "r3"})
    a, made = await machines.instance("a"), await machines.instance(derived)
    assert a is not None and made is not None
    assert (a["state"], made["state"], made["properties"]) == ("s1", "s1", {"host": "web1", "rack": "r3"})
    assert a["history"][0]["originator"] == "cron" and a["history"][0]["details"] == {"n": 1}
    assert (await machines.outcome("a", "e:1") or {})["outcome"] == "ok"  # an id with a colon, as over HTTP
    assert (await machines.outcome(derived, f"stream-{by_properties}") or {})["to"] == "s1"
    assert await pending(plain) == 0
    assert await plain.xlen(keys.dead_letters()) == 0


async def test_malformed_and_refused_entries_are_dead_lettered_with_their_fields_and_acknowledged(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    sent = [
        {"dest": "a"},
        {"dest": "a", "event": "step", "event_id": "d-1", "details": "{not json"},
        {"dest": "a", "event": "no spaces"},
        {"configuration": "chain:v1", "properties": '{"host": 7}', "event": "step"},
        {"configuration": "chain", "properties": '{"host":"x"}', "event": "step"},
        {"dest": "a", "configuration": "chain:v1", "event": "step"},
        {"dest": "a", "event": "step", "originator": "x" * 201},
        {"configuration": "gone:v1", "properties": '{"host":"web1"}', "event": "step", "event_id": "u-1"},
        {"dest": "ghost", "event": "step", "event_id": "g-1"},
        {"dest": "a", "event": "jump", "event_id": "j-1"},
    ]
    entries = [await plain.xadd(STREAM, fields) for fields in sent]

    await drain(consumers())

    letters = await plain.xrange(keys.dead_letters())
    assert [fields["entry"] for _, fields in letters] == entries
    for (_, fields), original in zip(letters, sent, strict=True):
        assert {k: fields[k] for k in original} == original
    errors = [fields["error"] for _, fields in letters]
    assert errors == ["malformed"] * 7 + ["unknown_configuration", "unknown_instance", "transition_not_allowed"]
    assert "event is required" in letters[0][1]["message"]
    assert "details is not JSON" in letters[1][1]["message"]
    assert await pending(plain) == 0
    gone = instance_id("gone:v1", {"host": "web1"})
    assert (await machines.outcome(gone, "u-1") or {})["outcome"] == "unknown_configuration"
    assert (await machines.outcome("a", "d-1") or {})["outcome"] == "malformed"
    assert (await machines.outcome("ghost", "g-1") or {})["outcome"] == "unknown_instance"
    assert await machines.state("a") == ("chain:v1", "s0")
    assert await plain.hget(keys.instances(), gone) is None


def test_parse_names_every_problem_of_an_entry() -> None:
    rejected = parse("1-0", {"event_id": "bad id", "dest": "a b", "details": "{"})

    assert isinstance(rejected, Rejected) and rejected.error == "malformed"
    assert (rejected.event_id, rejected.instance, rejected.event) == (None, None, None)
    for part in ("event is required", "event_id 'bad id'", "dest 'a b'", "details is not JSON"):
        assert part in rejected.message
    assert isinstance(parse("1-0", {"dest": "a", "event": "step"}), Event)


async def test_a_duplicate_event_id_is_applied_once(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    for _ in range(3):
        await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "same"})

    await drain(consumers())

    assert await machines.state("a") == ("chain:v1", "s1")
    assert await machines.counts(configuration_from(CHAIN)) == {"s0": 0, "s1": 1, "s2": 0, "s3": 0, "s4": 0, "s5": 0}
    assert await pending(plain) == 0
    assert await plain.xlen(keys.dead_letters()) == 0


async def test_a_dead_consumers_pending_entries_are_claimed_and_applied_once(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    for i in range(5):
        await machines.create("chain:v1", f"m{i}")
        await plain.xadd(STREAM, {"dest": f"m{i}", "event": "step", "event_id": f"e-{i}"})
    await plain.xreadgroup(GROUP, "dead:1", {STREAM: ">"}, count=100)  # read, never acknowledged: it died
    await plain.xadd(STREAM, {"dest": "m0", "event": "step", "event_id": "late"})
    assert await pending(plain) == 5

    await asyncio.sleep(0.3)
    await drain(consumers(name="alive:2", claim_after=0.2))

    assert await pending(plain) == 0
    states = [await machines.state(f"m{i}") for i in range(5)]
    assert states == [("chain:v1", "s2")] + [("chain:v1", "s1")] * 4
    assert await plain.xlen(keys.dead_letters()) == 0
    assert [c["name"] for c in await plain.xinfo_consumers(STREAM, GROUP) if c["pending"]] == []


async def test_claimed_entries_that_were_applied_meanwhile_change_nothing(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "e-1"})
    [[_, [(entry, fields)]]] = await plain.xreadgroup(GROUP, "slow:1", {STREAM: ">"}, count=1)
    slow = consumers(name="slow:1")
    claimer = consumers(name="claimer:2", claim_after=0.1)
    await asyncio.sleep(0.2)

    assert await claimer.claim(claimer.reader) == 1  # "slow:1" looked dead
    await slow.handle([(entry, fields)])  # ... but was only slow: its batch arrives after the claim's

    assert await machines.state("a") == ("chain:v1", "s1")
    assert await pending(plain) == 0


async def test_a_rejected_entry_buried_by_a_claimer_and_by_the_slow_consumer_has_one_dead_letter(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await plain.xadd(STREAM, {"dest": "a", "event_id": "no-event"})
    [[_, [(entry, fields)]]] = await plain.xreadgroup(GROUP, "slow:1", {STREAM: ">"}, count=1)
    slow = consumers(name="slow:1")
    claimer = consumers(name="claimer:2", claim_after=0.1)
    await asyncio.sleep(0.2)

    assert await claimer.claim(claimer.reader) == 1  # "slow:1" looked dead
    await slow.handle([(entry, fields)])  # ... but was only slow

    assert await plain.xlen(keys.dead_letters()) == 1
    assert await pending(plain) == 0
    assert 0 < await plain.pttl(keys.buried(entry)) <= 3600_000  # the marker goes with the outcomes


async def test_the_consumer_outlives_a_lost_group_and_backs_off_without_dying(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    consumer = consumers()
    consumer.start()
    assert await wait_async(lambda: plain.exists(STREAM))

    await plain.delete(STREAM)  # the group goes with it: the next read fails NOGROUP
    await asyncio.sleep(0.1)
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "after"})

    async def applied() -> bool:
        return await machines.state("a") == ("chain:v1", "s1")

    assert await wait_async(applied, timeout=5)
    assert consumer._task is not None and not consumer._task.done()


async def test_the_consumer_backs_off_while_redis_is_down_and_resumes_by_itself(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory(appendonly=True)
    client = Redis.from_url(server.url, decode_responses=True)
    store = Machines(client, local_clock(), retention=3600)
    await store.define(configuration_from(CHAIN))
    await store.create("chain:v1", "a")
    consumer = StreamConsumer(store, reader_for(server.url), claim_after=30, block_ms=10)
    try:
        with capture_logs() as logs:
            consumer.start()
            assert await wait_async(lambda: client.exists(STREAM))
            server.kill()
            await asyncio.sleep(1.2)  # a few failed turns: 0.5 s, then 1 s of backing off
            server.start()
            async with Redis.from_url(server.url, decode_responses=True) as fresh:  # the old one's connection died
                await fresh.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "after"})

                async def applied() -> bool:
                    return await fresh.hget(keys.instances(), "a") == "chain:v1 s1"

                assert await wait_async(applied, timeout=10), [(e["event"], e.get("error")) for e in logs]
        failures = [entry for entry in logs if entry["event"] == "stream_failed"]
        assert failures and [f["retry_in"] for f in failures[:2]] == [0.5, 1.0][: len(failures[:2])]
        assert consumer._task is not None and not consumer._task.done()
    finally:
        await consumer.close()
        await store.close()
        await client.aclose()


async def test_lag_and_pending_measure_the_oldest_entry_not_applied(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    consumer = consumers()
    await drain(consumer)
    node = consumer.reader
    assert await consumer.measure(node) == (0.0, 0)

    old_ms = int(time.time() * 1000) - 5000
    await plain.xadd(STREAM, {"dest": "a", "event": "step"}, id=f"{old_ms}-0")
    await plain.xreadgroup(GROUP, "other:9", {STREAM: ">"}, count=1)
    await plain.xadd(STREAM, {"dest": "a", "event": "step"})

    lag, waiting = await consumer.measure(node)
    assert 4.5 < lag < 30 and waiting == 1


async def test_an_entry_that_is_not_utf8_is_dead_lettered_as_it_came_and_its_batch_applied(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis, redis_url: str
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "e-1"})
    bad = await plain.xadd(STREAM, {"dest": "a", "event": b"\xff\xfe", "event_id": "e-2"})
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "e-3"})

    await drain(consumers())

    assert await machines.state("a") == ("chain:v1", "s2")
    assert await pending(plain) == 0
    async with Redis.from_url(redis_url) as raw:
        [(_, letter)] = await raw.xrange(keys.dead_letters())
    assert letter[b"event"] == b"\xff\xfe" and letter[b"entry"] == bad.encode()
    assert letter[b"error"] == b"malformed" and b"event is not UTF-8" in letter[b"message"]
    assert (await machines.outcome("a", "e-2") or {})["outcome"] == "malformed"


async def test_a_claimed_batch_with_an_entry_that_is_not_utf8_is_applied(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis, redis_url: str
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "mate-1"})
    await plain.xadd(STREAM, {"dest": "a", "event": "step", b"event_id": b"bad\xff"})
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "mate-2"})
    async with Redis.from_url(redis_url) as raw:
        await raw.xreadgroup(GROUP, "dead:1", {STREAM: ">"}, count=10)  # read, then it died
    await asyncio.sleep(0.3)

    decoding = connect(redis_url)  # a client that decodes replies: the entries are read undecoded all the same
    await drain(consumers(name="alive:2", claim_after=0.2, reader=decoding))

    assert await machines.state("a") == ("chain:v1", "s2")
    assert await pending(plain) == 0
    async with Redis.from_url(redis_url) as raw:
        [(_, letter)] = await raw.xrange(keys.dead_letters())
    assert letter[b"error"] == b"malformed" and b"event_id is not UTF-8" in letter[b"message"]
    assert letter[b"event_id"] == b"bad\xff"


async def test_a_batch_the_script_fails_on_is_applied_one_event_at_a_time(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    for name in ("a", "c"):
        await machines.create("chain:v1", name)
    await plain.hset(keys.instances(), "broken", "garbage")  # a record the script cannot read: it fails
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "a-1"})
    failing = await plain.xadd(STREAM, {"dest": "broken", "event": "step", "event_id": "b-1"})
    await plain.xadd(STREAM, {"dest": "c", "event": "step", "event_id": "c-1"})

    await drain(consumers())

    assert [await machines.state(name) for name in ("a", "c")] == [("chain:v1", "s1")] * 2
    assert await pending(plain) == 0
    [(_, letter)] = await plain.xrange(keys.dead_letters())
    assert (letter["error"], letter["entry"], letter["instance"], letter["dest"]) == (
        "apply_failed",
        failing,
        "broken",
        "broken",
    )
    assert letter["message"]  # Redis's error
    assert await machines.outcome("broken", "b-1") is None  # not applied: it may be sent again


async def test_a_failed_claim_waits_its_turn_like_a_done_one(
    consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    consumer = consumers(claim_after=10)
    consumer._grouped = True  # but there is no group: XAUTOCLAIM fails NOGROUP

    with pytest.raises(redis.exceptions.ResponseError):
        await consumer.step()

    assert consumer._claim_due > time.monotonic() + 4  # not claimed again on every turn


async def test_pending_entries_deleted_before_a_claim_are_acknowledged(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    entries = [await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": f"e-{i}"}) for i in range(3)]
    await plain.xreadgroup(GROUP, "dead:1", {STREAM: ">"}, count=10)  # read, then it died
    await plain.xdel(STREAM, entries[1])  # trimmed by a producer's MAXLEN, say
    await asyncio.sleep(0.3)
    consumer = consumers(name="alive:2", claim_after=0.2)

    await drain(consumer)  # Redis 6.2's XAUTOCLAIM claims the deleted entry and answers nil for it

    assert await machines.state("a") == ("chain:v1", "s2")
    assert await pending(plain) == 0
    lag, waiting = await consumer.measure(consumer.reader)
    assert (lag, waiting) == (0.0, 0)
    assert await plain.xlen(keys.dead_letters()) == 0


async def test_own_pending_entries_deleted_meanwhile_are_acknowledged_not_dead_lettered(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    await plain.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    entries = [await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": f"e-{i}"}) for i in range(2)]
    await plain.xreadgroup(GROUP, "test:1", {STREAM: ">"}, count=10)  # read, then an error struck
    await plain.xdel(STREAM, entries[0])
    consumer = consumers(name="test:1")
    consumer._recovering = True

    await drain(consumer)

    assert await machines.state("a") == ("chain:v1", "s1")
    assert await pending(plain) == 0
    assert await plain.xlen(keys.dead_letters()) == 0


async def test_an_entry_of_too_many_fields_is_malformed_and_its_dead_letter_keeps_the_first_64(
    machines: Machines, consumers: Callable[..., StreamConsumer], plain: Redis
) -> None:
    await machines.create("chain:v1", "a")
    fields = {"dest": "a", "event": "jump", "event_id": "m-1"} | {f"f{i}": "v" for i in range(97)}
    await plain.xadd(STREAM, fields)
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "after"})

    await drain(consumers())

    assert await machines.state("a") == ("chain:v1", "s1")
    assert await pending(plain) == 0
    [(_, letter)] = await plain.xrange(keys.dead_letters())
    assert letter["error"] == "malformed" and "100 fields: at most 64" in letter["message"]
    kept = {k: v for k, v in letter.items() if k not in ("error", "message", "entry", "instance")}
    assert kept == dict(list(fields.items())[:64])
    assert (await machines.outcome("a", "m-1") or {})["outcome"] == "malformed"


async def test_a_dead_letter_the_script_cannot_add_leaves_no_outcome(machines: Machines, plain: Redis) -> None:
    await machines.create("chain:v1", "a")
    await plain.set(keys.dead_letters(), "not a stream")  # XADD fails WRONGTYPE
    refused = parse("1-0", {"dest": "a", "event": "jump", "event_id": "j-1"})
    assert isinstance(refused, Event)

    with pytest.raises(redis.exceptions.ResponseError):
        await machines.apply_all([refused])

    assert await machines.outcome("a", "j-1") is None  # else a retry would be a duplicate of an event never letter'd


def test_consumer_names_differ_between_processes_of_one_host_and_pid() -> None:
    first, second = consumer_name(), consumer_name()

    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{8}}", first)
    assert first != second


class SlowMachines(Machines):
    """Machines whose batches take a while: close() comes while one is applied."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applying = asyncio.Event()

    async def apply_all(self, events: Any, stream: str = "", group: str = "") -> Any:
        self.applying.set()
        await asyncio.sleep(0.5)
        return await super().apply_all(events, stream, group)


async def test_close_lets_the_batch_in_flight_finish(
    clients: Callable[[], Redis], redis_url: str, plain: Redis
) -> None:
    store = SlowMachines(clients(), local_clock(), retention=3600)
    await store.define(configuration_from(CHAIN))
    await store.create("chain:v1", "a")
    await plain.xadd(STREAM, {"dest": "a", "event": "step", "event_id": "e-1"})
    consumer = StreamConsumer(store, reader_for(redis_url), claim_after=30, name="test:1", block_ms=10)
    consumer.start()
    await asyncio.wait_for(store.applying.wait(), 5)

    await consumer.close()

    assert await store.state("a") == ("chain:v1", "s1")
    assert await pending(plain) == 0
    assert consumer._task is not None and consumer._task.done()


async def wait_async(condition: Callable[[], Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- exactly once through real workers ------------------------------------------------------------

INSTANCES = 300
STEPS = 5


def worker_pids(service: Any) -> list[int]:
    return [event["worker_pid"] for event in service.events("worker_spawned")]


@pytest.mark.slow
def test_two_workers_one_sigkilled_apply_every_stream_event_exactly_once(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    asyncio.run(_define_and_create(redis_url))
    chart = tmp_path / "chart.yaml"
    chart.write_text(charts.chart("wave", "a", charts.final("a")))
    service = services.start(chart, redis_url=redis_url, workers=2, args=["--stream-claim-after", "1"])
    victim = worker_pids(service)[0]

    prefix = f"{socket.gethostname()}:{victim}:"
    assert wait_until(lambda: consumer_named(service, victim) is not None, timeout=10), service.stderr
    victim_name = consumer_named(service, victim)
    sent, killed_holding = 0, 0
    for step in range(STEPS):
        for start in range(0, INSTANCES, 50):
            # the second chunk: the victim is SIGKILLed as the first is applied, and this one is read under its
            # name as it is added (one MULTI: no worker is served before), so it certainly dies holding entries
            dies = step == 0 and start == 50
            if dies:
                os.kill(victim, signal.SIGKILL)
            with plain_sync.pipeline(transaction=dies) as pipe:
                for i in range(start, start + 50):
                    pipe.xadd(STREAM, {"dest": f"c{i}", "event": "step", "event_id": f"c{i}-{step}"})
                if dies:
                    pipe.xreadgroup(GROUP, victim_name, {STREAM: ">"}, count=50)
                pipe.execute()
            if dies:
                killed_holding = holding(plain_sync, prefix)
            sent += 50

    def consumed() -> bool:
        groups = {g["name"]: g for g in plain_sync.xinfo_groups(STREAM)}
        last = groups[GROUP]["last-delivered-id"]
        undelivered = plain_sync.xrange(STREAM, min=f"({last}", count=1)
        return not undelivered and int(plain_sync.xpending(STREAM, GROUP)["pending"]) == 0

    assert wait_until(consumed, timeout=60), plain_sync.xpending(STREAM, GROUP)
    records = plain_sync.hgetall(keys.instances())
    assert {records[f"c{i}"] for i in range(INSTANCES)} == {"chain:v1 s5"}
    assert plain_sync.hgetall(keys.instance_counts("chain:v1")) == {f"s{i}": "0" for i in range(5)} | {
        "s5": str(INSTANCES)
    }
    assert plain_sync.xlen(keys.dead_letters()) == 0
    outcomes = list(plain_sync.scan_iter(match=keys.event_outcome("*", "*"), count=1000))
    assert len(outcomes) == sent
    histories = [plain_sync.llen(keys.instance_history(f"c{i}")) for i in range(INSTANCES)]
    assert set(histories) == {STEPS}  # each step recorded once: none applied twice
    assert wait_until(lambda: stream_gauges(service) == (0.0, 0.0), timeout=10), scrape(service)
    applied_ok = total(scrape(service), "stateservice_events_total", outcome="ok", source="stream")
    assert 0 < applied_ok <= sent  # counted after each batch: a batch applied as its worker died is not
    assert service.stop() == 0  # SIGTERM: each worker's consumer stops and closes its connection
    assert not [e for e in service.events("stream_failed") if e.get("pid") != victim], service.stderr
    assert killed_holding > 0  # it died holding entries: the other worker claimed and applied them
    assert service.events("stream_claimed"), service.stderr


def scrape(service: ServiceProcess) -> str:
    status, _, body = http("GET", f"{service.url}/metrics")
    assert status == 200, body
    return body


def stream_gauges(service: ServiceProcess) -> tuple[float, float] | None:
    """(lag, pending) as the workers last measured them; None before any measured."""
    body = scrape(service)
    if "\nstateservice_stream_lag_seconds " not in body:
        return None
    return total(body, "stateservice_stream_lag_seconds"), total(body, "stateservice_stream_pending")


def consumer_named(service: ServiceProcess, pid: int) -> str | None:
    """The stream consumer's name of worker `pid` (host, pid, then a random part), once it has said it consumes."""
    return next((e["consumer"] for e in service.events("stream_consuming") if e.get("pid") == pid), None)


def holding(client: redis.Redis, prefix: str) -> int:
    """How many entries the consumer named `prefix`... has read and not acknowledged."""
    summary = client.xpending(STREAM, GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"].startswith(prefix))


async def _define_and_create(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    store = Machines(client, local_clock(), retention=3600)
    try:
        await store.define(configuration_from(CHAIN))
        for i in range(INSTANCES):
            await store.create("chain:v1", f"c{i}")
    finally:
        await store.close()
        await client.aclose()


async def test_idle_consumers_with_nothing_pending_are_forgotten_in_one_script(plain: Redis) -> None:
    await plain.xgroup_create(STREAM, keys.MACHINES_GROUP, id="0", mkstream=True)
    await plain.xadd(STREAM, {"dest": "a", "event": "step"})
    for name in ("gone", "busy", "me"):
        await plain.xgroup_createconsumer(STREAM, keys.MACHINES_GROUP, name)
    await plain.xreadgroup(keys.MACHINES_GROUP, "busy", {STREAM: ">"}, count=1)  # one entry pending to busy
    await asyncio.sleep(0.05)

    dropped = await plain.eval(FORGET_IDLE, 1, STREAM, keys.MACHINES_GROUP, 10, "me")

    left = {c["name"]: c["pending"] for c in await plain.xinfo_consumers(STREAM, keys.MACHINES_GROUP)}
    assert (dropped, left) == (1, {"busy": 1, "me": 0})
