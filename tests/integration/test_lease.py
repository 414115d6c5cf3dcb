"""The leader lease against a real redis-server: exclusive, token-checked, expiring; two Schedulers, one leader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from stateservice.core.chart import Chart
from stateservice.scheduler import Scheduler
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from stateservice.store.lease import Lease, holder
from tests.support.charts import load

T0 = datetime(2030, 1, 1, tzinfo=UTC)

SOAK = """
name: soak
current_state: soak
states:
  - name: soak
    func: time
    target: {name: open, when: {key: elapsed, value: 10m}}
  - name: open
"""


class FakeClock:
    """An injected async clock that says what the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    async def __call__(self) -> datetime:
        return self.now


def token(value: str | None) -> str:
    assert value is not None
    found: str = json.loads(value)["token"]
    return found


# -- Lease -----------------------------------------------------------------------------------


async def test_acquire_is_exclusive(clients: Callable[[], Redis], plain: Redis) -> None:
    leases = [Lease(clients(), 5.0, f"host:{pid}", pid) for pid in range(100, 110)]

    won = await asyncio.gather(*(lease.acquire() for lease in leases))

    assert sum(won) == 1
    [winner] = [lease for lease, ok in zip(leases, won, strict=True) if ok]
    assert await plain.get(keys.leader()) == winner.value
    assert not any([await lease.acquire() for lease in leases if lease is not winner])
    assert await plain.get(keys.leader()) == winner.value


async def test_lease_value_is_json_id_pid_token_with_the_ttl(clients: Callable[[], Redis], plain: Redis) -> None:
    lease = Lease(clients(), 2.5, "web-1:4242", 4242)
    assert await lease.acquire()

    value = json.loads(await plain.get(keys.leader()))
    assert value["id"] == "web-1:4242" and value["pid"] == 4242
    assert len(value["token"]) >= 32
    assert 2000 < await plain.pttl(keys.leader()) <= 2500


async def test_acquire_takes_back_a_lease_this_worker_still_holds_with_a_fresh_ttl(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    lease = Lease(clients(), 2.0, "web-1:1", 1)
    impostor = Lease(clients(), 30.0, "web-1:1", 1)  # same id and pid, another token
    assert await lease.acquire()
    await plain.pexpire(keys.leader(), 300)  # nearly run out, as after an outage or a failover

    assert not await impostor.acquire()
    assert 0 < await plain.pttl(keys.leader()) <= 300
    assert await lease.acquire()

    assert await plain.get(keys.leader()) == lease.value
    assert 1500 < await plain.pttl(keys.leader()) <= 2000


async def test_the_same_identity_gets_a_new_token_per_lease(clients: Callable[[], Redis]) -> None:
    client = clients()
    assert token(Lease(client, 1, "h:1", 1).value) != token(Lease(client, 1, "h:1", 1).value)


async def test_renew_only_by_the_holder(clients: Callable[[], Redis], plain: Redis) -> None:
    holder_lease = Lease(clients(), 1.0, "web-1:1", 1)
    # the same id and pid (a restarted worker reusing a pid, a confused copy): only the token differs
    impostor = Lease(clients(), 30.0, "web-1:1", 1)
    other = Lease(clients(), 30.0, "web-2:2", 2)
    assert await holder_lease.acquire()
    await plain.pexpire(keys.leader(), 500)

    assert not await impostor.renew()
    assert not await other.renew()
    assert 0 < await plain.pttl(keys.leader()) <= 500  # neither extended it
    assert await plain.get(keys.leader()) == holder_lease.value

    assert await holder_lease.renew()
    assert 500 < await plain.pttl(keys.leader()) <= 1000
    assert await plain.get(keys.leader()) == holder_lease.value


async def test_release_only_by_the_holder(clients: Callable[[], Redis], plain: Redis) -> None:
    holder_lease = Lease(clients(), 5.0, "web-1:1", 1)
    impostor = Lease(clients(), 5.0, "web-1:1", 1)
    assert await holder_lease.acquire()

    assert not await impostor.release()
    assert await plain.get(keys.leader()) == holder_lease.value
    assert not await impostor.acquire()

    assert await holder_lease.release()
    assert await plain.exists(keys.leader()) == 0
    assert not await holder_lease.release()  # twice: nothing left to release


async def test_release_lets_another_acquire_at_once(clients: Callable[[], Redis], plain: Redis) -> None:
    first = Lease(clients(), 30.0, "web-1:1", 1)
    second = Lease(clients(), 30.0, "web-2:2", 2)
    assert await first.acquire()
    assert not await second.acquire()

    assert await first.release()

    assert await second.acquire()
    assert await plain.get(keys.leader()) == second.value


async def test_the_lease_expires_after_the_ttl_and_another_takes_it(clients: Callable[[], Redis], plain: Redis) -> None:
    first = Lease(clients(), 0.3, "web-1:1", 1)
    second = Lease(clients(), 5.0, "web-2:2", 2)
    assert await first.acquire()
    assert not await second.acquire()

    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await second.acquire():
        assert loop.time() - start < 2.0, "the lease did not expire"
        await asyncio.sleep(0.02)
    assert loop.time() - start >= 0.2  # not before (about) its ttl

    # the former holder, paused past its lease, can neither extend nor delete its successor's
    assert not await first.renew()
    assert not await first.release()
    assert await plain.get(keys.leader()) == second.value
    assert 4000 < await plain.pttl(keys.leader()) <= 5000


async def test_holder_shape(clients: Callable[[], Redis]) -> None:
    client = clients()
    now = datetime.now(UTC)
    assert await holder(client, now) == {"id": None, "pid": None, "expires_at": None}

    lease = Lease(client, 3.0, "web-7:777", 777)
    assert await lease.acquire()
    found = await holder(client, now)

    assert set(found) == {"id", "pid", "expires_at"}
    assert found["id"] == "web-7:777" and found["pid"] == 777
    assert now + timedelta(seconds=2) < found["expires_at"] <= now + timedelta(seconds=3)
    assert found["expires_at"].utcoffset() == timedelta(0)
    assert "token" not in found  # the token fences the lease: it is never shown

    assert await lease.release()
    assert await holder(client, now) == {"id": None, "pid": None, "expires_at": None}


# -- Scheduler: two on one Redis ---------------------------------------------------------------


def scheduler(client: Redis, clock: FakeClock, pid: int, charts: dict[str, Chart] | None = None) -> Scheduler:
    store = ChartStore(client, clock=clock)
    return Scheduler(store, Lease(client, 5.0, f"host:{pid}", pid), charts or {}, UTC)


async def test_two_schedulers_exactly_one_leads_and_the_other_takes_over_after_stop(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    clock = FakeClock(T0)
    one, two = scheduler(clients(), clock, 1), scheduler(clients(), clock, 2)

    for _ in range(3):  # renewing keeps it: the follower never gets in
        await asyncio.gather(one.step(), two.step())
        assert [one.leading, two.leading].count(True) == 1
    leader, follower = (one, two) if one.leading else (two, one)
    assert await plain.get(keys.leader()) == leader.lease.value

    await leader.stop()
    assert not leader.leading
    assert await plain.exists(keys.leader()) == 0

    await follower.step()
    assert follower.leading
    assert await plain.get(keys.leader()) == follower.lease.value
    await leader.step()  # the former leader now competes and loses
    assert not leader.leading


async def test_a_leader_whose_lease_was_taken_stops_leading(clients: Callable[[], Redis], plain: Redis) -> None:
    clock = FakeClock(T0)
    one, two = scheduler(clients(), clock, 1), scheduler(clients(), clock, 2)
    await one.step()
    assert one.leading
    await plain.delete(keys.leader())  # the lease expired while `one` was paused
    await two.step()
    assert two.leading

    await one.step()

    assert not one.leading
    assert await plain.get(keys.leader()) == two.lease.value
    await one.stop()  # not the holder: it must leave the successor's lease alone
    assert await plain.get(keys.leader()) == two.lease.value


async def test_a_leader_whose_lease_ran_out_takes_it_again_in_the_same_step_if_free(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    one = scheduler(clients(), FakeClock(T0), 1)
    await one.step()
    await plain.delete(keys.leader())  # expired while `one` was paused, or lost in a failover; nobody took it

    await one.step()

    assert one.leading
    assert await plain.get(keys.leader()) == one.lease.value


async def test_a_leader_that_lost_sight_of_redis_takes_its_lease_back_on_the_next_step(
    clients: Callable[[], Redis], plain: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    one, two = scheduler(clients(), clock, 1), scheduler(clients(), clock, 2)
    await one.step()
    assert one.leading

    async def unreachable() -> bool:
        raise RedisConnectionError("Connection refused")

    with monkeypatch.context() as patch:  # one renew fails: a blip, or the master dying before a failover
        patch.setattr(one.lease, "renew", unreachable)
        await one.step()
    assert not one.leading
    await plain.pexpire(keys.leader(), 200)  # the key (carried to the new master) is about to run out

    await two.step()
    await one.step()

    assert one.leading and not two.leading  # taken back, not waited out: no leaderless gap
    assert await plain.get(keys.leader()) == one.lease.value
    assert 4000 < await plain.pttl(keys.leader()) <= 5000


async def test_only_the_leader_advances_and_it_advances_charts_other_services_registered(
    clients: Callable[[], Redis], plain: Redis
) -> None:
    chart = load(SOAK, "soak.yaml")
    clock = FakeClock(T0)
    await ChartStore(clients(), clock=clock).register(chart)  # another service serves it: neither knows the chart
    one, two = scheduler(clients(), clock, 1), scheduler(clients(), clock, 2)
    await one.step()
    await two.step()
    leader, follower = (one, two) if one.leading else (two, one)
    clock.now = T0 + timedelta(minutes=10)

    await follower.step()
    assert await plain.hget(keys.chart_state("soak"), keys.CURRENT_STATE) == "soak"

    await leader.step()
    assert await plain.hget(keys.chart_state("soak"), keys.CURRENT_STATE) == "open"
    [(_, record)] = await plain.xrange(keys.chart_history("soak"))
    assert (record["from"], record["to"], record["cause"]) == ("soak", "open", "time")
    assert record["due_at"] == codec.timestamp(T0 + timedelta(minutes=10))

    await asyncio.gather(leader.step(), follower.step(), leader.step())
    assert len(await plain.xrange(keys.chart_history("soak"))) == 1
