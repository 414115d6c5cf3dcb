"""store/machines.py against a real redis-server: definitions, instances, events exactly once, guards, counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.core.machines import configuration_from, instance_id
from stateservice.errors import ConfigurationExists, InstanceExists, StoreUnavailable, UnknownConfiguration
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Event, Machines
from stateservice.store.redis.connect import connect
from stateservice.store.redis.replicated import replicated
from tests.support.redisproc import RedisProcess

UPGRADE: dict[str, Any] = {
    "name": "upgrade",
    "version": "v1",
    "states": ["drain", "drained", "upgraded", "back"],
    "starting_state": "drain",
    "transitions": [
        {"from": "drain", "to": "drained", "event": "drained"},
        {"from": "drained", "to": "upgraded", "event": "upgrade", "requires": {"chart": "rollout", "state": "wave1"}},
        {"from": "upgraded", "to": "back", "event": "rejoin"},
        {"from": "back", "to": "drain", "event": "again"},
    ],
}


@pytest.fixture
async def machines(clients: Callable[[], Redis]) -> AsyncIterator[Machines]:
    store = Machines(clients(), local_clock(), retention=3600, history_limit=3)
    assert await store.define(configuration_from(UPGRADE))
    yield store
    await store.close()


async def test_a_configuration_is_stored_once_and_never_changed(machines: Machines, plain: Redis) -> None:
    changed = configuration_from({**UPGRADE, "states": ["drain"], "transitions": []})

    assert not await machines.define(changed)
    with pytest.raises(ConfigurationExists):
        await machines.define_new(changed)

    fresh = Machines(plain, local_clock())
    assert await fresh.configuration("upgrade:v1") == configuration_from(UPGRADE)
    assert await plain.hget(keys.transitions("upgrade:v1"), "drain drained") == '{"to":"drained"}'
    assert await fresh.refs("upgrade") == ["upgrade:v1"]
    assert await fresh.refs("other") == []


async def test_instances_by_id_and_by_properties(machines: Machines, plain: Redis) -> None:
    made, created = await machines.create("upgrade:v1", "web1-lifecycle")
    assert (made, created) == ("web1-lifecycle", True)
    with pytest.raises(InstanceExists):
        await machines.create("upgrade:v1", "web1-lifecycle")
    with pytest.raises(UnknownConfiguration):
        await machines.create("nope:v1")

    first = await machines.create("upgrade:v1", properties={"host": "web1", "rack": "r3"})
    again = await machines.create("upgrade:v1", properties={"rack": "r3", "host": "web1"})
    assert first == (instance_id("upgrade:v1", {"host": "web1", "rack": "r3"}), True)
    assert again == (first[0], False)
    generated, _ = await machines.create("upgrade:v1")
    assert len(generated) == 36

    assert await plain.hget(keys.instances(), "web1-lifecycle") == "upgrade:v1 drain"
    assert await plain.smembers(keys.instances_with("upgrade:v1", "rack", "r3")) == {first[0]}
    assert await machines.counts(configuration_from(UPGRADE)) == {"drain": 3, "drained": 0, "upgraded": 0, "back": 0}
    shown = await machines.instance(first[0])
    assert shown == {
        "id": first[0],
        "configuration": "upgrade:v1",
        "state": "drain",
        "properties": {"host": "web1", "rack": "r3"},
        "context": {},
        "history": [],
    }


async def test_an_event_applies_once_and_its_duplicate_answers_the_first_outcome(machines: Machines) -> None:
    await machines.create("upgrade:v1", "m1")

    first = await machines.apply(Event("drained", "e-1", instance="m1", originator="chef", details={"n": 1}))
    again = await machines.apply(Event("drained", "e-1", instance="m1"))

    assert first.ok and not first.duplicate
    assert first.body["from"] == "drain" and first.body["to"] == "drained"
    assert again.duplicate and again.body == first.body
    shown = await machines.instance("m1")
    assert shown is not None and shown["state"] == "drained"
    [record] = shown["history"]
    assert record == {
        "from": "drain",
        "to": "drained",
        "event_id": "e-1",
        "event": "drained",
        "at": first.body["at"],
        "originator": "chef",
        "details": {"n": 1},
    }
    assert await machines.outcome("m1", "e-1") == first.body
    assert await machines.outcome("m1", "e-2") is None


async def test_refusals_are_outcomes_too(machines: Machines, plain: Redis) -> None:
    await machines.create("upgrade:v1", "m1")

    wrong = await machines.apply(Event("rejoin", "e-1", instance="m1"))
    missing = await machines.apply(Event("drained", "e-2", instance="ghost"))
    await machines.apply(Event("drained", "e-3", instance="m1"))
    guarded = await machines.apply(Event("upgrade", "e-4", instance="m1"))
    await plain.hset(keys.chart_state("rollout"), keys.CURRENT_STATE, "wave1")
    allowed = await machines.apply(Event("upgrade", "e-5", instance="m1"))

    assert wrong.body["outcome"] == "transition_not_allowed" and wrong.body["state"] == "drain"
    assert missing.body["outcome"] == "unknown_instance"
    assert guarded.body["outcome"] == "requirement_not_met"
    assert allowed.ok and allowed.body["to"] == "upgraded"
    assert (await machines.apply(Event("upgrade", "e-4", instance="m1"))).body["outcome"] == "requirement_not_met"


async def test_an_event_by_properties_creates_the_instance_on_first_use(machines: Machines) -> None:
    props = {"host": "web2"}
    outcome = await machines.apply(Event("drained", "e-1", ref="upgrade:v1", properties=props))

    assert outcome.ok and outcome.body["instance"] == instance_id("upgrade:v1", props)
    counts = await machines.counts(configuration_from(UPGRADE))
    assert counts == {"drain": 0, "drained": 1, "upgraded": 0, "back": 0}


async def test_concurrent_events_through_many_clients_stay_exact(
    clients: Callable[[], Redis], machines: Machines, plain: Redis
) -> None:
    workers = [Machines(clients(), local_clock()) for _ in range(4)]
    ids = [f"m{i}" for i in range(50)]
    for name in ids:
        await machines.create("upgrade:v1", name)

    async def send(store: Machines, n: int) -> list[bool]:
        # every worker sends every event once: each applies exactly once whoever wins
        return [(await store.apply(Event("drained", f"d-{name}", instance=name))).duplicate for name in ids[n::2]] + [
            (await store.apply(Event("drained", f"d-{name}", instance=name))).duplicate for name in ids
        ]

    results = await asyncio.gather(*(send(w, i) for i, w in enumerate(workers)))
    assert sum(not dup for r in results for dup in r) == len(ids)
    counts = await machines.counts(configuration_from(UPGRADE))
    assert counts == {"drain": 0, "drained": 50, "upgraded": 0, "back": 0}
    assert await plain.scard(keys.instances_in("upgrade:v1", "drained")) == 50
    for w in workers:
        await w.close()


async def test_history_is_capped_newest_first(machines: Machines) -> None:
    await machines.create("upgrade:v1", "m1")
    await machines.apply(Event("drained", "1", instance="m1"))
    for n in range(3):  # drained -> ... needs the guard; go round through rejoin/again by hand
        await machines.redis.hset(keys.instances(), "m1", "upgrade:v1 upgraded")
        await machines.apply(Event("rejoin", f"r{n}", instance="m1"))
    shown = await machines.instance("m1")
    assert shown is not None
    assert [h["event_id"] for h in shown["history"]] == ["r2", "r1", "r0"]


async def test_with_wait_replicas_an_event_is_acknowledged_only_once_replicas_have_it(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    master, replica = redis_factory(), redis_factory()
    follower = Redis.from_url(replica.url, decode_responses=True)
    await follower.replicaof("127.0.0.1", master.port)
    for _ in range(100):
        if (await follower.info("replication"))["master_link_status"] == "up":
            break
        await asyncio.sleep(0.05)
    client = connect(master.url)
    enough = Machines(replicated(client, 1, 2.0), local_clock())
    too_many = Machines(replicated(client, 2, 0.2), local_clock())

    assert await enough.define(configuration_from(UPGRADE))
    await enough.create("upgrade:v1", "m1")
    applied = await enough.apply(Event("drained", "e-1", instance="m1"))
    with pytest.raises(StoreUnavailable, match="only 1 of the 2 replica"):
        await too_many.apply(Event("rejoin", "e-2", instance="m1"))

    assert applied.ok
    assert await follower.hget(keys.instances(), "m1") == "upgrade:v1 drained"  # on the replica before the answer
    for store in (enough, too_many):
        await store.close()
    await client.aclose()
    await follower.aclose()


async def test_deleting_an_instance_removes_it_from_every_index_and_count(machines: Machines, plain: Redis) -> None:
    props = {"host": "web1", "rack": "r3"}
    made, _ = await machines.create("upgrade:v1", properties=props)
    await machines.create("upgrade:v1", "keep")
    await machines.apply(Event("drained", "e-1", instance=made))

    assert await machines.delete(made) == ("upgrade:v1", "drained")
    assert await machines.delete(made) is None

    assert await machines.instance(made) is None
    assert await machines.counts(configuration_from(UPGRADE)) == {"drain": 1, "drained": 0, "upgraded": 0, "back": 0}
    assert not await plain.sismember(keys.instances_in("upgrade:v1", "drained"), made)
    assert not await plain.exists(keys.instances_with("upgrade:v1", "rack", "r3"), keys.instance_history(made))
    assert not await plain.hexists(keys.instance_properties(), made)
    assert await machines.create("upgrade:v1", properties=props) == (made, True)  # the same properties: anew
