"""Instances on a real 3-master Redis Cluster: every {machines} key in one slot, so each script runs on one node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stateservice.core.machines import configuration_from
from stateservice.errors import InvalidConfiguration
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Event, Machines
from stateservice.store.redis.connect import connect
from stateservice.store.stream import StreamConsumer, reader_for
from tests.support.cluster import Cluster

FLIP = {
    "name": "flip",
    "version": "v1",
    "states": ["a", "b"],
    "starting_state": "a",
    "transitions": [{"from": "a", "to": "b", "event": "go"}, {"from": "b", "to": "a", "event": "go"}],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    made.start()
    yield made
    made.stop()


@pytest.fixture
async def machines(cluster: Cluster) -> AsyncIterator[Machines]:
    cluster.flush()
    client = connect(cluster.url, cluster=True)
    store = Machines(client, local_clock(), cluster=True)
    yield store
    await store.close()
    await client.aclose()


async def test_instances_and_events_work_on_a_cluster(machines: Machines, cluster: Cluster) -> None:
    assert await machines.define(configuration_from(FLIP))
    await machines.create("flip:v1", "i1")
    made, _ = await machines.create("flip:v1", properties={"host": "web1"})
    assert await machines.create_many("flip:v1", ids=["i2", "i3"]) == 2

    first = await machines.apply(Event("go", "e1", instance="i1"))
    again = await machines.apply(Event("go", "e1", instance="i1"))
    by_props = await machines.apply(Event("go", "e2", ref="flip:v1", properties={"host": "web1"}))

    assert first.ok and again.duplicate and by_props.body["instance"] == made
    assert await machines.counts(configuration_from(FLIP)) == {"a": 2, "b": 2}
    shown = await machines.instance("i1")
    assert shown is not None and shown["state"] == "b" and len(shown["history"]) == 1
    # one master holds them all: the hash tag puts every instance key in the instances hash's slot
    owners = {cluster.owner(k).address for k in (keys.instances(), keys.instances_in("flip:v1", "b"))}
    assert len(owners) == 1


async def test_a_guard_on_a_chart_is_refused_on_a_cluster(machines: Machines) -> None:
    guarded = {**FLIP, "version": "v2"}
    guarded["transitions"] = [{"from": "a", "to": "b", "event": "go", "requires": {"chart": "fleet", "state": "s"}}]

    with pytest.raises(InvalidConfiguration, match="needs one Redis, not a Cluster"):
        await machines.define(configuration_from(guarded))


async def test_the_stream_consumer_reads_and_applies_on_a_cluster(machines: Machines, cluster: Cluster) -> None:
    assert await machines.define(configuration_from(FLIP))
    await machines.create("flip:v1", "i1")
    consumer = StreamConsumer(machines, reader_for(cluster.url, cluster=True), claim_after=30, block_ms=10)
    try:
        await consumer.step()  # XGROUP and XREADGROUP name the key second: sent to the stream's master
        await machines.redis.xadd(keys.events_stream(), {"dest": "i1", "event": "go", "event_id": "s1"})
        await machines.redis.xadd(keys.events_stream(), {"dest": "nobody", "event": "go"})
        await machines.redis.xadd(keys.events_stream(), {"dest": "i1"})  # malformed: buried by the consumer
        while await consumer.step():
            pass
    finally:
        await consumer.close()

    assert await machines.state("i1") == ("flip:v1", "b")
    assert await machines.redis.xlen(keys.dead_letters()) == 2
    assert (await machines.redis.xpending(keys.events_stream(), keys.MACHINES_GROUP))["pending"] == 0
