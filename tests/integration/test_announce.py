"""Changes that move nothing are published only while a live dashboard listens somewhere (store/announce.py)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from stateservice.store import keys
from stateservice.web.appkeys import WATCHER
from tests.support.app import MakeClient
from tests.support.charts import load

WAVE = """
    name: wave
    current_state: fleet
    states:
      - name: fleet
        func: increment
        current: {key: hosts, value: 0}
        target: {name: done, when: {key: hosts, value: 100}}
      - name: done
    """


async def heard(plain: Redis, act: object) -> list[str]:
    """The change notices published on the wave chart while `act` (a coroutine) runs."""
    pubsub = plain.pubsub()
    await pubsub.subscribe(keys.chart_changes("wave"))
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    await act  # type: ignore[misc]
    found = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)) is not None:
        found.append(message["data"])
    await pubsub.aclose()
    return found


async def test_reports_are_announced_only_while_a_dashboard_listens_on_any_worker(
    serve: MakeClient, plain: Redis
) -> None:
    reporting = await serve(load(WAVE), scheduler=False)
    watching = await serve(load(WAVE), scheduler=False)
    await asyncio.sleep(1.2)  # both announcers have looked once
    assert await heard(plain, reporting.put("/state?state=fleet&host=w1")) == []
    listener = watching.app[WATCHER].listen(["wave"])
    for _ in range(20):  # written at once, not at the announcer's next turn a second away
        if await plain.get(keys.dashboard_watching()) == "1":
            break
        await asyncio.sleep(0.02)
    assert await plain.get(keys.dashboard_watching()) == "1"
    await asyncio.sleep(1.2)  # the reporting worker's announcer has looked again
    assert await heard(plain, reporting.put("/state?state=fleet&host=w2")) == ["fleet"]
    watching.app[WATCHER].unlisten(listener)
    await plain.delete(keys.dashboard_watching())  # as its expiry would, 30 s after the last listener
    await asyncio.sleep(1.2)
    assert await heard(plain, reporting.put("/state?state=fleet&host=w3")) == []
