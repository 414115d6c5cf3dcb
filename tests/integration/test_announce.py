"""Changes that move nothing are published only while a live dashboard listens somewhere (store/announce.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeout

from stateservice.store import keys
from stateservice.store.announce import Announcer
from stateservice.store.charts import ChartStore
from stateservice.store.watch import MoveWatcher
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


async def test_close_returns_when_redis_py_turns_its_cancel_into_a_timeout(
    plain: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = MoveWatcher(plain)
    announcer = Announcer(plain, cast(ChartStore, SimpleNamespace(announcing=False)), watcher, interval=0.05)

    reads = 0

    async def exists(*_: str) -> int:  # the first, as redis-py's read can when cancelled under its socket timeout
        nonlocal reads
        reads += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if reads == 1:
                raise RedisTimeout("Timeout reading from socket") from None
            raise
        return 0

    monkeypatch.setattr(plain, "exists", exists)
    announcer.start()
    await asyncio.sleep(0.2)  # it is inside its read
    closing = asyncio.ensure_future(announcer.close())
    done, _ = await asyncio.wait({closing}, timeout=3)
    closing.cancel()  # if it is still looking, a second cancel ends it (and this test, with its message)
    assert done, "close() did not return: the announcer took its cancel for an outage and looked again, for ever"
