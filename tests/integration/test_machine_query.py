"""store/machine_query.py against a real redis-server: the smallest set is scanned, pages end inside replies,
a sparse match answers short pages, and every match is found once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.core.machines import Configuration, configuration_from, instance_id
from stateservice.errors import BadRequest
from stateservice.store import machine_query
from stateservice.store.clock import local_clock
from stateservice.store.machines import Event, Machines

JOBS: dict[str, Any] = {
    "name": "jobs",
    "version": "v1",
    "states": ["queued", "running", "done"],
    "starting_state": "queued",
    "transitions": [
        {"from": "queued", "to": "running", "event": "start"},
        {"from": "running", "to": "done", "event": "finish"},
    ],
}


@pytest.fixture
async def jobs(clients: Callable[[], Redis]) -> AsyncIterator[tuple[Redis, Configuration]]:
    """600 jobs, zones z0-z5; every tenth running, every hundredth done."""
    redis = clients()
    store = Machines(redis, local_clock())
    configuration = configuration_from(JOBS)
    await store.define(configuration)
    for i in range(600):
        await store.create(configuration.ref, properties={"job": str(i), "zone": f"z{i % 6}"})
    events = []
    for i in range(0, 600, 10):
        target = {"ref": configuration.ref, "properties": {"job": str(i), "zone": f"z{i % 6}"}}
        events.append(Event("start", f"s{i}", **target))
        if i % 100 == 0:
            events.append(Event("finish", f"f{i}", **target))
    await store.apply_all(events)
    yield redis, configuration
    await store.close()


async def walk(redis: Redis, configuration: Configuration, limit: int, budget: int, **query: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await machine_query.find(
            redis, configuration, query.get("state"), query.get("properties", {}), limit, cursor, budget
        )
        assert len(page.items) <= limit
        pages.append([item["properties"]["job"] for item in page.items])
        if page.cursor is None:
            return pages
        cursor = page.cursor


def jobs_of(pages: list[list[str]]) -> list[int]:
    return sorted(int(job) for page in pages for job in page)


@pytest.mark.parametrize(("limit", "budget"), [(1, 10_000), (3, 10_000), (50, 10_000), (1000, 10_000), (5, 20)])
async def test_every_match_once_whatever_the_page_and_budget(
    jobs: tuple[Redis, Configuration], limit: int, budget: int
) -> None:
    redis, configuration = jobs
    assert jobs_of(await walk(redis, configuration, limit, budget)) == list(range(600))
    running = await walk(redis, configuration, limit, budget, state="running")
    assert jobs_of(running) == [i for i in range(0, 600, 10) if i % 100]
    zone = await walk(redis, configuration, limit, budget, state="running", properties={"zone": "z2"})
    assert jobs_of(zone) == [i for i in range(0, 600, 10) if i % 100 and i % 6 == 2]
    one = await walk(redis, configuration, limit, budget, properties={"job": "599", "zone": "z5"})
    assert jobs_of(one) == [599]


async def test_a_sparse_match_answers_short_pages_within_the_budget(jobs: tuple[Redis, Configuration]) -> None:
    redis, configuration = jobs
    # no running job is in z1 (running jobs are even, z1's odd): the 50 running ids are scanned 20 a page
    pages = await walk(redis, configuration, 10, 20, state="running", properties={"zone": "z1"})
    assert jobs_of(pages) == []
    assert len(pages) >= 3


async def test_the_smallest_set_is_scanned(jobs: tuple[Redis, Configuration]) -> None:
    redis, configuration = jobs
    query = machine_query._Query(redis, configuration, "queued", {"zone": "z1", "job": "7"})
    assert await query.pick() == 1  # the job's set (one id), not the state's (540) or the zone's (100)
    assert query.candidates[1] == "stateservice:{machines}:with:jobs:v1:job:7"
    empty = machine_query._Query(redis, configuration, "queued", {"zone": "nowhere"})
    assert await empty.pick() is None
    page = await machine_query.find(redis, configuration, "queued", {"zone": "nowhere"}, 10)
    assert (page.items, page.cursor) == ([], None)
    assert instance_id(configuration.ref, {"job": "7", "zone": "z1"}) in {
        i["id"] for i in (await machine_query.find(redis, configuration, "queued", {"job": "7", "zone": "z1"}, 5)).items
    }


async def test_a_malformed_cursor_is_refused(jobs: tuple[Redis, Configuration]) -> None:
    redis, configuration = jobs
    for cursor in ("", "x", "0.0", "0.0.0.0", "0.0.0~a", "0.0.0.0~", "0.0.0.0~-a", "0.0.999999999999999999999"):
        with pytest.raises(BadRequest):
            await machine_query.find(redis, configuration, None, {}, 10, cursor)


async def drain(redis: Redis, configuration: Configuration, limit: int) -> tuple[list[str], int]:
    """The usual worker loop: list a page of queued jobs, start each listed one, ask for the next page."""
    store = Machines(redis, local_clock())
    listed: list[str] = []
    cursor, pages = None, 0
    while True:
        page = await machine_query.find(redis, configuration, "queued", {}, limit, cursor)
        pages += 1
        ids = [item["id"] for item in page.items]
        listed += ids
        await store.apply_all([Event("start", f"drain-{i}", instance=i) for i in ids])
        if page.cursor is None:
            return listed, pages
        cursor = page.cursor


async def test_a_page_resumes_after_the_last_id_served_not_at_a_position(clients: Callable[[], Redis]) -> None:
    # 50 ids: one SSCAN reply holds them all; each page asks for it again, without the ids the last pages moved
    redis = clients()
    configuration = configuration_from({**JOBS, "name": "few"})
    store = Machines(redis, local_clock())
    await store.define(configuration)
    for i in range(50):
        await store.create(configuration.ref, f"h{i:02d}")
    listed, pages = await drain(redis, configuration, 10)
    assert sorted(listed) == [f"h{i:02d}" for i in range(50)]
    assert pages <= 6
    await store.close()


async def test_instances_that_stay_put_are_listed_while_listed_ones_move(jobs: tuple[Redis, Configuration]) -> None:
    # 540 queued ids in a hash table: SSCAN replies asked for again reach further once served ids have left
    redis, configuration = jobs
    listed, _ = await drain(redis, configuration, 10)
    assert len(listed) == len(set(listed)) == 540


def test_the_earlier_cursor_is_the_one_a_walk_reaches_first() -> None:
    # a 8-bucket table is walked 0 4 2 6 1 5 3 7: 4 comes before 2, 6 before 1; 0 is the end
    assert machine_query._earlier(2, 4) == 4
    assert machine_query._earlier(1, 6) == 6
    assert machine_query._earlier(0, 5) == 5
    assert machine_query._earlier(3, 0) == 3
    assert machine_query._earlier(0, 0) == 0
